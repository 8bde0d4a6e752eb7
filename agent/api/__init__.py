"""The intake HTTP API: orders in, order operations, Lightspeed webhooks, problem documents, the OpenAPI document.

May import ``agent.domain``, ``agent.outbox``, ``agent.dispatch``, ``agent.printing`` and ``drivers.pos``.
"""
