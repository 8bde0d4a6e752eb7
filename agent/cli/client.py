"""The CLI's way to a running agent: its intake API on loopback, with the configured token."""

from __future__ import annotations

from typing import Any

import httpx

from agent.domain.config import Settings


class AgentUnreachable(Exception):
    """No agent answered at the configured intake address."""


class AgentClient:
    """Calls the local agent's API; raises AgentUnreachable when nothing answers."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        host = settings.intake.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - an any-address listener is reached on loopback
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        self.base = f"http://{host}:{settings.intake.port}"
        token = settings.intake.token.get_secret_value() if settings.intake.token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.base, headers=headers, timeout=timeout, trust_env=False)

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request; connection failures become AgentUnreachable."""
        try:
            return self._client.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            msg = f"no agent answered at {self.base} ({type(exc).__name__}): is 'venue-agent run' running?"
            raise AgentUnreachable(msg) from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
