"""The durable outbox: the SQLite store, its schema and migrations, the writes, the typed rows, snoozes.

May import ``agent.domain`` only.
"""
