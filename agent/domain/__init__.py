"""The order and its rules: models, states and transitions, money, the clock, errors and the settings.

Pure code. Imports nothing from ``agent`` or ``drivers``; everything else may import it.
"""
