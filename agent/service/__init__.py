"""The running daemon: wiring, start-up and ordered shutdown, systemd notifications, logs, health, mDNS.

May import every package below it (``agent.domain`` to ``agent.mqtt``) and ``drivers``; only ``agent.cli`` imports it.
"""
