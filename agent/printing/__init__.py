"""Getting tickets onto paper: the print worker, ticket rendering, the printer test page, USB presence.

May import ``agent.domain``, ``agent.outbox``, ``agent.dispatch`` (alerts, backoff) and ``drivers.printers``.
"""
