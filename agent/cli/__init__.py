"""The ``venue-agent`` command line: run, config check, doctor, status, orders, printers, POS, demo, console.

The top floor: may import every ``agent`` package and ``drivers``; nothing in ``agent`` imports it.
"""
