"""Journal priorities: on the journal stream every log line starts with ``<N>`` (syslog priority), nowhere else.

journald reads that prefix (``SyslogLevelPrefix=``, on by default) so ``journalctl -p warning -u venue-agent``
shows the agent's warnings and errors; without it every line was priority 6 (info).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import structlog

from agent.service import logs
from tests.test_crash_recovery import BIN, _child_env, free_port

LINE = re.compile(r"^<(\d)>(\{.*\})$")


def journal_env(path: Path) -> dict[str, str]:
    """Return ``$JOURNAL_STREAM`` naming the file at ``path``, as systemd names its journal socket."""
    info = path.stat()
    return {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}


@pytest.mark.parametrize(
    ("level", "priority"), [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2), ("exception", 3)]
)
def test_levels_map_to_syslog_priorities(level: str, priority: int) -> None:
    """Each structlog level has its syslog priority (sd-daemon(3) ``<N>`` values)."""
    assert logs.syslog_priority(level) == priority


def test_the_journal_is_recognised_by_device_and_inode_only(tmp_path: Path) -> None:
    """$JOURNAL_STREAM must name this very stream; any other file, no variable, or a terminal is not the journal."""
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        assert logs.is_journal(stream, journal_env(path))
        assert not logs.is_journal(stream, {})
        other = tmp_path / "other.log"
        other.write_text("")
        assert not logs.is_journal(stream, journal_env(other))
        assert not logs.is_journal(stream, {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"})
    assert not logs.is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor at all
    leader, follower = os.openpty()
    try:
        tty = os.fdopen(follower, "w")
        info = os.fstat(follower)
        assert not logs.is_journal(tty, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        tty.close()
    finally:
        os.close(leader)


def test_each_json_line_carries_its_priority_and_stays_one_json_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the journal: ``<N>{...}`` per line, N from the level; the standard library's lines are prefixed too."""
    path = tmp_path / "journal.log"
    path.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", journal_env(path)["JOURNAL_STREAM"])
    with path.open("a") as stream:
        logs.configure("debug", "json", stream=stream)
        log = structlog.get_logger("venue_agent.test")
        log.debug("a_debug")
        log.info("an_info")
        log.warning("a_warning", detail="line one\nline two")
        log.error("an_error")
        import logging

        logging.getLogger("some.library").error("library trouble")
        stream.flush()
    lines = path.read_text().splitlines()
    found = {}
    for line in lines[:4]:
        match = LINE.match(line)
        assert match, line
        found[json.loads(match.group(2))["event"]] = int(match.group(1))
    assert found == {"a_debug": 7, "an_info": 6, "a_warning": 4, "an_error": 3}
    assert lines[4] == "<3>some.library: library trouble"


def test_no_prefix_off_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a file that is not the journal stream the lines are plain JSON, as before."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    structlog.get_logger("t").warning("plain")
    assert json.loads(stream.getvalue())["event"] == "plain"
    logs.error_line("error: something", stream=stream)
    assert stream.getvalue().splitlines()[-1] == "error: something"


def test_the_real_agent_under_a_journal_stream_prefixes_every_line_by_level(tmp_path: Path) -> None:
    """``venue-agent run`` with $JOURNAL_STREAM naming its output: debug 7, info 6, warning 4, error 3 on each line."""
    port = free_port()
    config = tmp_path / "agent.toml"
    # The printer's profile does not exist (an error at start), the broker does not answer (a warning).
    config.write_text(
        f"""
[venue]
id = "harbour-kitchen"
[storage]
path = "{tmp_path / "outbox.db"}"
min_free_mb = 0
[intake]
listen = "127.0.0.1:{port}"
[pos]
driver = "http"
[pos.http]
url = "http://127.0.0.1:9/orders"
[[printers]]
name = "pass"
connection = "network"
host = "127.0.0.1"
port = 9
profile = "NO-SUCH-PROFILE"
[mqtt]
enabled = true
host = "127.0.0.1"
port = {free_port()}
[discovery]
advertise = false
[logging]
level = "debug"
""",
        encoding="utf-8",
    )
    log_path = tmp_path / "journal.log"
    with log_path.open("wb") as log_file:
        env = {**_child_env(), **journal_env(log_path), "INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
        popen = subprocess.Popen(
            [str(BIN), "run", "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 20
        while not all(
            f'"{e}"' in log_path.read_text() for e in ("agent_ready", "mqtt_unavailable", "printer_misconfigured")
        ):
            assert popen.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(timeout=30) == 0
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    seen: dict[str, set[int]] = {}
    for line in log_path.read_text().splitlines():
        match = LINE.match(line)
        if match is None:  # a library's standard-library logging line: "<N>name: message", warnings and up
            assert re.match(r"^<[234]>[\w.]+: ", line), f"neither '<N>' + one JSON object nor a library line: {line!r}"
            continue
        entry = json.loads(match.group(2))
        assert int(match.group(1)) == logs.syslog_priority(entry["level"]), line
        seen.setdefault(entry["level"], set()).add(int(match.group(1)))
    assert seen == {"debug": {7}, "info": {6}, "warning": {4}, "error": {3}}
