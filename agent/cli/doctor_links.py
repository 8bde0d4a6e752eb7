"""``venue-agent doctor``: the verdicts on the agent's links (the POS, the printers, the MQTT broker).

Pure functions from facts to ok / warn / fail and what to do, as in ``doctor``; the facts are gathered by
agent/cli/doctor_link_probes.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.cli.doctor import Finding, Level

# ---- POS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosFacts:
    """What the POS probe found (``state`` is a ReadinessState value), or why it could not run (``problem``)."""

    driver: str
    state: str | None = None
    latency_ms: float | None = None
    detail: str = ""
    conditions: dict[str, bool] = field(default_factory=dict)
    problem: Literal["config", "timeout", "secret", "token_refresh"] | None = None
    agent_state: str | None = None  # the running agent's own view (health pos.state), when it could be asked
    agent_detail: str = ""


def _conditions(conditions: dict[str, bool]) -> str:
    return "; " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in conditions.items()) if conditions else ""


def judge_pos(facts: PosFacts) -> Finding:
    """Return the verdict on the POS: reachable, credentials accepted, ready to take orders."""
    name = f"{facts.driver}"
    if facts.problem == "secret":
        return Finding("pos", "warn", f"{name}: not checked: {facts.detail}", "run 'sudo venue-agent doctor'")
    if facts.problem == "config":
        return Finding("pos", "fail", f"{name}: {facts.detail}", "fix [pos] in the config")
    if facts.problem == "timeout":
        return Finding("pos", "fail", f"{name}: {facts.detail}", "check the POS is on and online, and the network")
    if facts.problem == "token_refresh":
        why = (
            "the POS token needs a refresh; doctor leaves that to the agent (Lightspeed refresh tokens are single-use)"
        )
        verdicts: dict[str, Level] = {"ok": "ok", "degraded": "warn"}
        if facts.agent_state is None:
            return Finding("pos", "warn", f"{name}: not checked: {why}", "start the agent, then run doctor again")
        level = verdicts.get(facts.agent_state, "fail")
        detail = f"{name}: the running agent reports {facts.agent_state}{facts.agent_detail} ({why})"
        return Finding("pos", level, detail, "see 'venue-agent status' and the Troubleshooting section")
    latency = f" ({facts.latency_ms:.0f} ms)" if facts.latency_ms is not None else ""
    state = facts.state
    if state == "ready":
        return Finding("pos", "ok", f"{name}: ready{latency}{_conditions(facts.conditions)}")
    if state == "unsupported":
        return Finding("pos", "ok", f"{name}: reachable{latency}; no readiness check ({facts.detail})")
    if state == "not_ready":
        detail = f"{name}: reachable{latency} but NOT READY: {facts.detail}{_conditions(facts.conditions)}"
        todo = "open the POS app on the till and sign in; orders print as fallback tickets meanwhile"
        return Finding("pos", "warn", detail, todo)
    if state == "auth_required":
        todo = "re-authorise: venue-agent pos authorize (Lightspeed), or a new access_token (Square), then restart"
        return Finding("pos", "fail", f"{name}: credentials refused: {facts.detail}", todo)
    todo = "check the POS is switched on and online, and its address in [pos] (venue-agent discover finds terminals)"
    return Finding("pos", "fail", f"{name}: NOT REACHABLE: {facts.detail}", todo)


# ---- printers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterFacts:
    """One printer: how it is reached, its status (a PrinterStatus value) and code page, and who read them."""

    name: str
    where: str
    status: str
    detail: str = ""
    code_page: str | None = None
    code_page_error: str | None = None
    from_agent: bool = False  # read from the running agent's health (serial/USB are not opened twice)
    confirm: bool = True
    writes_text: bool = False


def judge_printer(facts: PrinterFacts) -> Finding:
    """Return the verdict on one printer: code page usable, reachable, answering DLE EOT with no fault."""
    check = f"printer {facts.name}"
    seen = " (as the running agent last read it)" if facts.from_agent else ""
    if facts.code_page_error is not None:
        todo = "set profile (and code_page) to one python-escpos knows: see docs/printers.md, 'Profiles and code pages'"
        return Finding(check, "fail", f"{facts.where}: {facts.code_page_error}", todo)
    encoding = "plain text" if facts.writes_text else (facts.code_page or "?")
    base = f"{facts.where}, {encoding}"
    status = facts.status
    if status == "ok":
        return Finding(check, "ok", f"{base}: ready{seen}")
    if status == "paper_low":
        return Finding(check, "warn", f"{base}: paper nearly out{seen}", "put a new roll in soon")
    if status in ("paper_out", "cover_open"):
        what = "paper is out" if status == "paper_out" else "cover is open"
        return Finding(check, "fail", f"{base}: {what}{seen}", "load paper and close the cover")
    if status == "unknown":
        if not facts.confirm or facts.writes_text:
            return Finding(check, "ok", f"{base}: reachable; no status read (confirm = false){seen}")
        todo = "check the printer answers status (DLE EOT): print-test; else set confirm = false for it"
        return Finding(check, "warn", f"{base}: did not answer a status request ({facts.detail}){seen}", todo)
    todo = (
        "check power, cable/network and the address in the config; then: venue-agent print-test --printer " + facts.name
    )
    return Finding(check, "fail", f"{base}: OFFLINE: {facts.detail}{seen}", todo)


# ---- MQTT --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttFacts:
    """The broker test: where it stopped (``stage``), how, and what the broker holds as the agent's status."""

    enabled: bool
    broker: str = ""
    stage: Literal["ok", "secret", "connect", "tls", "auth", "publish", "timeout"] = "ok"
    detail: str = ""
    protocol: str = ""
    topic: str = ""
    acl_confirmed: bool | None = None  # True: the broker took the publish; None: it cannot tell (3.1.1)
    agent_status: str | None = None  # "online"/"offline" from the retained status, None: none retained


def judge_mqtt(facts: MqttFacts) -> Finding:
    """Return the verdict on the broker: connect, TLS, login, and an ACL that lets the agent publish its status."""
    if not facts.enabled:
        return Finding("mqtt", "ok", "MQTT disabled")
    where = f"broker {facts.broker}"
    if facts.stage == "secret":
        return Finding("mqtt", "warn", f"{where}: {facts.detail}", "run 'sudo venue-agent doctor'")
    todos = {
        "connect": "check [mqtt] host/port, that the broker runs, and the network/firewall",
        "timeout": "check [mqtt] host/port and the network (the broker did not answer in time)",
        "tls": "check [mqtt] ca_file (and cert_file/key_file) match the broker's certificate, and the clock",
        "auth": "check [mqtt] username/password (or the client certificate) with the ops team",
        "publish": f"the broker's ACL must let this venue publish to {facts.topic} (and its other topics)",
    }
    if facts.stage != "ok":
        return Finding("mqtt", "fail", f"{where}: {facts.detail}", todos[facts.stage])
    status = f"; the agent's status there: {facts.agent_status}" if facts.agent_status else ""
    if facts.acl_confirmed is None:
        detail = (
            f"{where}: connected ({facts.protocol}), published to {facts.topic},"
            f" but MQTT 3.1.1 cannot tell whether the ACL took it{status}"
        )
        return Finding("mqtt", "warn", detail, "check the broker's ACL for this venue's topics with the ops team")
    return Finding("mqtt", "ok", f"{where}: connected ({facts.protocol}), ACL lets it publish to {facts.topic}{status}")
