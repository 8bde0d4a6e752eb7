"""The link to the ops console: the reporter (status, health, events, alerts) and the commands it receives.

May import every package below it: domain, outbox, dispatch, printing and api (all under ``agent``).
"""
