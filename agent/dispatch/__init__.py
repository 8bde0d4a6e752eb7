"""Getting orders into the POS: the injection loop, backoff, circuit breaker, rate limit, fallback rules, alerts.

May import ``agent.domain``, ``agent.outbox`` and ``drivers.pos``.
"""
