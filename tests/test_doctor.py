"""``venue-agent doctor``'s verdicts (agent/cli/doctor.py): facts in, ok / warn / fail and what to do out. No I/O."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cli import doctor_probes
from agent.cli.config_check import ConfigReport
from agent.cli.doctor import (
    MB,
    AgentFacts,
    ClockFacts,
    Finding,
    OutboxFacts,
    adjtimex_synchronised,
    as_json,
    exit_code,
    judge_agent,
    judge_clock,
    judge_config,
    judge_disk,
    judge_orders,
    judge_outbox,
    parse_timedatectl,
    render,
)
from agent.cli.doctor_links import MqttFacts, PosFacts, PrinterFacts, judge_mqtt, judge_pos, judge_printer
from agent.domain.errors import Problem

NOW = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)


def test_exit_code_is_the_worst_level() -> None:
    """0 all ok (or nothing checked), 1 a warning, 2 any failure, like config check's 2."""
    ok, warn, fail = Finding("a", "ok", ""), Finding("b", "warn", ""), Finding("c", "fail", "")
    assert [exit_code([]), exit_code([ok]), exit_code([ok, warn]), exit_code([warn, fail, ok])] == [0, 0, 1, 2]


def test_render_one_line_per_check_and_what_to_do_under_warn_and_fail() -> None:
    """``ok|warn|fail  <check>  <detail>``; a ``what to do`` line follows only a warning or a failure."""
    text = render(
        [
            Finding("disk", "ok", "plenty", "never shown"),
            Finding("pos", "fail", "down", "switch it on"),
            Finding("clock", "warn", "unknown", "check NTP"),
        ]
    )
    assert text.splitlines() == [
        "ok    disk             plenty",
        "fail  pos              down",
        "                       what to do: switch it on",
        "warn  clock            unknown",
        "                       what to do: check NTP",
    ]
    document = as_json([Finding("pos", "fail", "down", "switch it on")], version="x")
    assert document == {
        "ok": False,
        "exit": 2,
        "version": "x",
        "checks": [{"check": "pos", "level": "fail", "detail": "down", "todo": "switch it on"}],
    }


@pytest.mark.parametrize(
    ("free_mb", "level"), [(10_000, "ok"), (100, "ok"), (99, "warn"), (50, "warn"), (49, "fail"), (0, "fail")]
)
def test_disk_fails_below_min_free_and_warns_below_twice_it(free_mb: int, level: str) -> None:
    """Below storage.min_free_mb intake refuses orders (fail); below twice it, a warning."""
    finding = judge_disk(free_mb * MB, min_free_mb=50, path="/var/lib/venue-agent")
    assert finding.level == level
    assert ("REFUSING ORDERS NOW" in finding.detail) == (level == "fail")


def test_disk_probe_reads_the_nearest_existing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's directory may not exist yet: the file system of its nearest existing parent is measured."""

    class Usage(NamedTuple):
        total: int
        used: int
        free: int

    asked: list[Path] = []

    def usage(path: Path) -> Usage:
        asked.append(Path(path))
        return Usage(100 * MB, 99 * MB, 1 * MB)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    free, error = doctor_probes.disk_free(tmp_path / "not" / "yet" / "outbox.db")
    assert (free, error, asked) == (MB, "", [tmp_path])
    assert judge_disk(free, min_free_mb=50, path=str(tmp_path)).level == "fail"


@given(st.text())
def test_timedatectl_without_the_property_is_unknown(text: str) -> None:
    """Any output without an ``NTPSynchronized=yes|no`` line tells nothing."""
    if "NTPSynchronized=" not in text:
        assert parse_timedatectl(text) is None


@given(st.lists(st.text(alphabet="ABCxyz=\n "), max_size=5), st.sampled_from(["yes", "no"]))
def test_timedatectl_property_is_read_wherever_it_is(noise: list[str], value: str) -> None:
    """The NTPSynchronized line is found among other lines."""
    lines = [line.replace("NTPSynchronized", "") for line in noise]
    text = "\n".join([*lines, f"NTPSynchronized={value}"])
    assert parse_timedatectl(text) is (value == "yes")


def test_clock_verdicts() -> None:
    """Synchronised is ok; not synchronised or unknown is a warning that says what a wrong clock breaks."""
    assert [adjtimex_synchronised(s) for s in range(6)] == [True, True, True, True, True, False]
    assert judge_clock(ClockFacts(True, "timedatectl")).level == "ok"
    unsynced = judge_clock(ClockFacts(False, "kernel adjtimex"))
    assert unsynced.level == "warn" and "OAuth" in unsynced.todo
    assert judge_clock(ClockFacts(None, "", "no tool")).level == "warn"


@pytest.mark.parametrize(
    ("facts", "level", "words"),
    [
        (PosFacts("lightspeed_k", "ready", 41.0, conditions={"pos_online": True}), "ok", "ready (41 ms)"),
        (PosFacts("http", "unsupported", 12.0, "no /ready"), "ok", "no readiness check"),
        (PosFacts("lightspeed_k", "not_ready", 30.0, "app closed", {"app_open": False}), "warn", "app_open NO"),
        (PosFacts("square", "auth_required", detail="401"), "fail", "credentials refused"),
        (PosFacts("http", "unreachable", detail="refused"), "fail", "NOT REACHABLE"),
        (PosFacts("http", problem="timeout", detail="no answer within 6 s"), "fail", "no answer"),
        (PosFacts("square", problem="secret", detail="cannot read pos.square"), "warn", "not checked"),
        (PosFacts("square", problem="config", detail="pos.square.location_id: required"), "fail", "location_id"),
        (PosFacts("lightspeed_k", problem="token_refresh"), "warn", "single-use"),
        (PosFacts("lightspeed_k", problem="token_refresh", agent_state="ok"), "ok", "agent reports ok"),
        (PosFacts("lightspeed_k", problem="token_refresh", agent_state="auth_required"), "fail", "auth_required"),
    ],
)
def test_pos_verdicts(facts: PosFacts, level: str, words: str) -> None:
    """Each readiness state and each reason the probe could not run has its level and says why."""
    finding = judge_pos(facts)
    assert (finding.level, finding.check) == (level, "pos")
    assert words in finding.detail
    assert finding.level == "ok" or finding.todo


@pytest.mark.parametrize(
    ("facts", "level"),
    [
        (PrinterFacts("pass", "network 10.0.0.5:9100", "ok", code_page="CP858"), "ok"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "paper_low", code_page="CP858"), "warn"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "paper_out", code_page="CP858"), "fail"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "cover_open", code_page="CP858"), "fail"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "offline", "refused", "CP858"), "fail"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "unknown", "silent", "CP858"), "warn"),
        (PrinterFacts("pass", "network 10.0.0.5:9100", "unknown", "silent", "CP858", confirm=False), "ok"),
        (PrinterFacts("pass", "serial /dev/ttyUSB0", "unknown", code_page_error="no profile 'X'"), "fail"),
        (PrinterFacts("file", "file /tmp/t.txt", "ok", writes_text=True), "ok"),
    ],
)
def test_printer_verdicts(facts: PrinterFacts, level: str) -> None:
    """A printer is ok only when it answers with no fault (or is not meant to answer); the check names it."""
    finding = judge_printer(facts)
    assert (finding.check, finding.level) == ("printer pass" if facts.name == "pass" else "printer file", level)


def test_printer_read_from_the_running_agent_says_so() -> None:
    """A serial or USB printer is not opened while the agent runs: its last status comes from the agent."""
    finding = judge_printer(PrinterFacts("bar", "usb 04b8:0202", "ok", code_page="CP858", from_agent=True))
    assert finding.level == "ok" and "as the running agent last read it" in finding.detail


@pytest.mark.parametrize(
    ("facts", "level", "words"),
    [
        (MqttFacts(False), "ok", "MQTT disabled"),
        (
            MqttFacts(True, "b:1883", "ok", "", "MQTT 5", "venues/x/status", True, "online"),
            "ok",
            "status there: online",
        ),
        (MqttFacts(True, "b:1883", "ok", "", "MQTT 3.1.1", "venues/x/status", None), "warn", "cannot tell"),
        (MqttFacts(True, "b:1883", "connect", "refused"), "fail", "refused"),
        (MqttFacts(True, "b:8883 (TLS)", "tls", "TLS failed: CERTIFICATE_VERIFY_FAILED"), "fail", "TLS"),
        (MqttFacts(True, "b:1883", "auth", "the broker refused the connection: Not authorized"), "fail", "refused"),
        (MqttFacts(True, "b:1883", "publish", "reason code 135", topic="venues/x/status"), "fail", "135"),
        (MqttFacts(True, "b:1883", "secret", "not checked"), "warn", "not checked"),
    ],
)
def test_mqtt_verdicts(facts: MqttFacts, level: str, words: str) -> None:
    """Disabled is fine; every stage where the broker test stopped fails with its own advice."""
    finding = judge_mqtt(facts)
    assert finding.level == level and words in finding.detail


def test_agent_verdicts() -> None:
    """Active and ready is ok; without systemd the API alone decides; failed or silent is a failure."""
    url = "http://127.0.0.1:8787"
    assert judge_agent(AgentFacts("active", "ready", url)).level == "ok"
    assert judge_agent(AgentFacts(None, "ready", url)).detail.endswith("(systemd is not running on this machine)")
    assert judge_agent(AgentFacts(None, "unreachable", url)).level == "fail"
    assert judge_agent(AgentFacts("failed", "unreachable", url)).todo.startswith("see why: journalctl")
    assert judge_agent(AgentFacts("active", "unreachable", url)).level == "fail"
    assert judge_agent(AgentFacts("active", "refused", url, "cannot read")).level == "warn"
    assert judge_agent(AgentFacts("activating", "unreachable", url)).level == "warn"
    assert judge_agent(AgentFacts("active", "not_ready", url)).level == "fail"
    by_hand = judge_agent(AgentFacts("inactive", "ready", url))
    assert by_hand.level == "warn" and "started by hand" in by_hand.todo


def test_outbox_and_orders_verdicts() -> None:
    """A refused or damaged outbox fails; failed orders, or orders waiting past the fallback delay, warn."""
    base = {"path": "/var/lib/venue-agent/outbox.db", "source": "the service's state directory"}
    assert judge_outbox(OutboxFacts(exists=True, refusal="empty: ...", **base)).level == "fail"
    assert judge_outbox(OutboxFacts(exists=True, integrity="page 4 is never used", **base)).level == "fail"
    assert judge_outbox(OutboxFacts(exists=False, **base)).level == "warn"
    assert judge_outbox(OutboxFacts(exists=True, sizes={"db": MB, "wal": 0}, **base)).level == "ok"
    counts = {"queued": 2, "failed": 0}
    waiting = OutboxFacts(exists=True, counts=counts, oldest_due=NOW - timedelta(minutes=3), **base)
    assert judge_orders(waiting, now=NOW, print_after_seconds=60).level == "warn"
    assert judge_orders(waiting, now=NOW, print_after_seconds=600).level == "ok"
    failed = OutboxFacts(exists=True, counts={"failed": 1}, last_injected=NOW - timedelta(hours=2), **base)
    verdict = judge_orders(failed, now=NOW, print_after_seconds=60)
    assert verdict.level == "warn" and "1 FAILED" in verdict.detail and "last injected 2.0 h ago" in verdict.detail
    assert "orders resubmit" in verdict.todo


def test_a_config_that_does_not_load_is_one_failure() -> None:
    """Without a valid config the report is one failure listing every problem (the other checks cannot run)."""
    report = ConfigReport(None, [Problem("venue.id", "required key is missing", "/etc/venue-agent/agent.toml")])
    [finding] = judge_config(report)
    assert finding.level == "fail" and "venue.id: required key is missing" in finding.detail
