"""The shipped systemd unit (systemd/venue-agent.service): it parses, matches the agent, and is sandboxed.

Three kinds of checks:

- static: the unit read with configparser (``strict=False``, repeated keys kept) against what the agent does:
  Type=notify and a watchdog at least twice the agent's ping and status cadence (agent/service/sdnotify.py,
  agent/service/daemon.py), a stop timeout longer than the agent's shutdown, the ExecStart command the CLI accepts,
  the device rules for serial/USB printers, AF_NETLINK for zeroconf/ifaddr;
- ``systemd-analyze security --offline=yes``: exposure at most 2.5 ("OK");
- ``systemd-analyze verify``: no warning about the unit. verify insists that ExecStart's binary exists, and
  /opt/venue-agent (the package's virtualenv) does not exist on a development machine. Rather than weaken the
  unit, it is verified twice: (1) byte for byte, inside a scratch root (``--root``) holding a copy of this
  machine's system units and an executable /opt/venue-agent/bin/venue-agent that execs the virtualenv's real
  ``venue-agent``; (2) outside any root, a copy whose ExecStart names the virtualenv's ``venue-agent`` directly,
  against this machine's own unit set. What neither can tell (the user exists, the device classes are in
  /proc/devices at start, the sandbox lets the agent print) needs a real box: see the unit's comments.

Skipped only when ``systemd-analyze`` is not installed (or too old for ``--offline``, for that one test).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import EXIT_USAGE, build_parser, cmd_run
from agent.domain.config_sections import _default_db_path, _default_log_format
from agent.service import advertise, daemon, sdnotify, service

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "venue-agent.service"
UNIT_NAME = UNIT.name
EXEC_START = "/opt/venue-agent/bin/venue-agent run --config /etc/venue-agent/agent.toml"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/lib/systemd/system")
# Agent.stop() waits up to this long for the intake server (asyncio.wait_for(intake, timeout=6)).
INTAKE_STOP_SECONDS = 6.0

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (package: systemd)")


class _MultiDict(dict[str, Any]):
    """configparser's section dict that keeps repeated keys: while parsing, values are lists, so extend them."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def parse_unit(text: str) -> configparser.RawConfigParser:
    """Parse unit-file syntax: case-sensitive keys, repeated keys joined by newlines, '#' and ';' comments."""
    parser = configparser.RawConfigParser(
        strict=False, dict_type=_MultiDict, delimiters=("=",), comment_prefixes=("#", ";"), empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@pytest.fixture(scope="module")
def unit() -> configparser.RawConfigParser:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def values(unit: configparser.RawConfigParser, section: str, key: str) -> list[str]:
    """Return every assignment of ``key`` in ``section``, in order ([] if never set)."""
    if not unit.has_option(section, key):
        return []
    return unit.get(section, key).split("\n")


def one(unit: configparser.RawConfigParser, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= should be set exactly once, found {found}"
    return found[0]


def words(unit: configparser.RawConfigParser, section: str, key: str) -> list[str]:
    return [word for value in values(unit, section, key) for word in value.split()]


def seconds(text: str) -> float:
    """Parse a systemd time span ('30', '30s', '1min 30s', '500ms') into seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert parts, f"not a time span: {text!r}"
    for number, suffix in parts:
        assert suffix in units, f"unexpected time unit {suffix!r} in {text!r}"
        total += float(number) * units[suffix]
    return total


def is_true(text: str) -> bool:
    return text.strip().lower() in {"1", "yes", "true", "on"}


# ---- static checks -----------------------------------------------------------------------------------------


def test_the_unit_parses_with_the_expected_sections(unit: configparser.RawConfigParser) -> None:
    assert unit.sections() == ["Unit", "Service", "Install"]
    # Repeated keys are kept (configparser alone would keep only the last one).
    assert len(values(unit, "Service", "DeviceAllow")) >= 4
    assert len(values(unit, "Service", "SystemCallFilter")) == 2


def test_type_notify_with_a_watchdog_at_least_twice_the_agents_cadence(unit: configparser.RawConfigParser) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"  # READY/WATCHDOG come from the agent process only
    watchdog = seconds(one(unit, "Service", "WatchdogSec"))
    # The agent derives its keep-alive interval from $WATCHDOG_USEC (half of it, sd_watchdog_enabled(3)).
    ping = sdnotify.watchdog_interval({"WATCHDOG_USEC": str(int(watchdog * 1_000_000))})
    assert ping is not None, "the agent would not ping at all for this WatchdogSec"
    assert watchdog >= 2 * ping, f"WatchdogSec={watchdog:g}s is less than twice the ping interval ({ping:g}s)"
    status = daemon.STATUS_INTERVAL_SECONDS
    assert watchdog >= 2 * status, f"WatchdogSec={watchdog:g}s is less than twice the STATUS= cadence ({status:g}s)"
    # Restart=on-failure covers a watchdog timeout (result "watchdog") as well as a crash.
    assert one(unit, "Service", "Restart") in {"on-failure", "on-abnormal", "always"}
    assert seconds(one(unit, "Service", "RestartSec")) > 0


def test_stop_timeout_covers_the_agents_shutdown(unit: configparser.RawConfigParser) -> None:
    """SIGKILL must not cut the drain: advertiser stop, then intake, then POS calls in flight, in sequence."""
    shutdown = advertise.STOP_TIMEOUT_SECONDS + INTAKE_STOP_SECONDS + service.DRAIN_SECONDS
    stop = seconds(one(unit, "Service", "TimeoutStopSec"))
    assert stop >= shutdown + 5, f"TimeoutStopSec={stop:g}s leaves < 5 s beyond the agent's {shutdown:g}s shutdown"


def test_it_keeps_restarting_except_on_a_bad_config(unit: configparser.RawConfigParser) -> None:
    # The box is unattended: no start rate limit that would leave it stopped after a burst of failures.
    assert seconds(one(unit, "Unit", "StartLimitIntervalSec")) == 0
    # Exit 2 is "bad usage or bad config" (docs/operations.md): restarting cannot fix it.
    assert words(unit, "Service", "RestartPreventExitStatus") == [str(EXIT_USAGE)]


def test_execstart_runs_the_packaged_agent_with_the_system_config(unit: configparser.RawConfigParser) -> None:
    assert one(unit, "Service", "ExecStart") == EXEC_START
    args = build_parser().parse_args(EXEC_START.split()[1:])
    assert args.handler is cmd_run
    assert args.config == "/etc/venue-agent/agent.toml"


def test_identity_directories_and_environment(unit: configparser.RawConfigParser) -> None:
    assert one(unit, "Service", "User") == "venue-agent"
    assert one(unit, "Service", "Group") == "venue-agent"
    assert "DynamicUser" not in unit["Service"]
    assert {"dialout", "lp"} <= set(words(unit, "Service", "SupplementaryGroups"))
    for kind in ("State", "Configuration", "Cache"):
        assert one(unit, "Service", f"{kind}Directory") == "venue-agent"
        assert one(unit, "Service", f"{kind}DirectoryMode") == "0750"
    assert one(unit, "Service", "UMask") == "0027"
    assert "PYTHONUNBUFFERED=1" in words(unit, "Service", "Environment")
    assert one(unit, "Service", "StandardOutput") == "journal"


def test_the_agent_finds_its_outbox_and_log_format_the_way_systemd_sets_them_up(
    unit: configparser.RawConfigParser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$STATE_DIRECTORY (from StateDirectory=) holds the outbox; $INVOCATION_ID means JSON logs."""
    monkeypatch.setenv("STATE_DIRECTORY", f"/var/lib/{one(unit, 'Service', 'StateDirectory')}")
    assert _default_db_path() == Path("/var/lib/venue-agent/outbox.db")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    assert _default_log_format() == "json"


def test_secrets_example_uses_load_credential() -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert "#LoadCredential=lsk-client-secret:/etc/venue-agent/credentials/lsk-client-secret" in text


def test_ordering_and_install(unit: configparser.RawConfigParser) -> None:
    assert "network-online.target" in words(unit, "Unit", "Wants")
    assert "network-online.target" in words(unit, "Unit", "After")
    assert words(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_printer_devices_are_reachable(unit: configparser.RawConfigParser) -> None:
    """PrivateDevices= would hide /dev/tty*, /dev/usb and /dev/bus/usb; a closed policy with class rules instead."""
    private = values(unit, "Service", "PrivateDevices")
    assert not any(is_true(v) for v in private), "PrivateDevices=yes hides the serial and USB printers"
    assert one(unit, "Service", "DevicePolicy") == "closed"
    rules = {tuple(v.split()) for v in values(unit, "Service", "DeviceAllow")}
    for device in ("char-ttyUSB", "char-ttyACM", "char-usb_device", "char-usb"):
        assert (device, "rw") in rules, f"DeviceAllow={device} rw is missing"
    # Node paths (/dev/ttyUSB0) are resolved to major:minor once, at start: a replug would then be refused.
    assert not [r for r in rules if r[0].startswith("/dev/")], "use device classes, not node paths"


def test_address_families_include_netlink(unit: configparser.RawConfigParser) -> None:
    families = words(unit, "Service", "RestrictAddressFamilies")
    assert families, "RestrictAddressFamilies= is not set"
    assert not families[0].startswith("~"), "an allow list is expected, not a deny list"
    # AF_NETLINK: ifaddr (zeroconf's interface enumeration) calls getifaddrs(), which uses netlink.
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families)


def test_sandbox_directives(unit: configparser.RawConfigParser) -> None:
    service_section = unit["Service"]
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RemoveIPC",
    ):
        assert is_true(one(unit, "Service", key)), f"{key}= should be yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "ProtectProc") == "invisible"
    assert one(unit, "Service", "ProcSubset") == "pid"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert one(unit, "Service", "AmbientCapabilities") == ""
    assert one(unit, "Service", "SystemCallArchitectures") == "native"
    assert values(unit, "Service", "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    # Off on purpose (see the unit's comments): the POS can be anywhere; groups for devices.
    for key in ("IPAddressDeny", "IPAddressAllow", "PrivateNetwork", "PrivateUsers"):
        assert key not in service_section, f"{key}= breaks the agent (see the comment in the unit)"


# ---- systemd-analyze ---------------------------------------------------------------------------------------


def analyze_version() -> int:
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.match(r"systemd (\d+)", out)
    assert match, f"unexpected systemd-analyze --version output: {out[:200]!r}"
    return int(match.group(1))


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


@needs_analyze
def test_security_exposure_is_ok() -> None:
    version = analyze_version()
    if version < 250:
        pytest.skip(f"systemd-analyze {version} has no --offline (needs systemd >= 250)")
    # --threshold is on the 0-100 scale (exposure 2.5 == 25): the exit code fails above it.
    result = run_analyze("security", "--offline=yes", "--no-pager", f"--threshold={int(MAX_EXPOSURE * 10)}", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, f"no exposure line in:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    exposure = float(match.group(1))
    # Table rows that add to the exposure end in their share of it ("0.5"); the passing ones end in blanks.
    rows = [(float(m.group(2)), m.group(1)) for m in re.finditer(r"^\S+ (\S+=\S*).*?(\d+\.\d+)$", result.stdout, re.M)]
    offenders = [f"{share:.1f}  {name}" for share, name in sorted(rows, key=lambda row: -row[0]) if share > 0]
    print(f"systemd {version}: exposure {exposure} {match.group(2)}; top offenders:")
    for line in offenders[:10]:
        print("  " + line)
    assert exposure <= MAX_EXPOSURE and result.returncode == 0, (
        f"exposure {exposure} > {MAX_EXPOSURE}; top offenders:\n" + "\n".join(offenders[:10])
    )


def venv_entry_point() -> Path:
    """Return the virtualenv's ``venue-agent`` console script (the real entry point the package installs)."""
    path = Path(sys.executable).parent / "venue-agent"
    if not path.exists():
        pytest.fail(f"{path} is missing: install the project into the virtualenv (pip install -e .)")
    return path


def ours(stderr: str) -> list[str]:
    """Return verify's lines about our unit.

    Filter, and the only one: lines that name neither venue-agent.service nor its file are about other units of
    this machine (verify loads the host's units for our dependencies; a broken third-party unit there is not our
    problem). They are printed, not failed on. verify's exit code is checked separately, so a verify that could not
    run at all still fails.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "venue-agent" not in line:
            print(f"(ignored, not about our unit) {line}")
    return [line for line in lines if "venue-agent" in line]


def scratch_root(tmp_path: Path, unit_text: str) -> Path:
    """Return a root with this machine's system units, our unit verbatim, and an executable ExecStart path."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "lib/systemd/system", symlinks=True)
    (root / "lib/systemd/system" / UNIT_NAME).write_text(unit_text, encoding="utf-8")
    binary = root / EXEC_START.split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    # A symlink would be resolved inside the root (and lead nowhere): a script that execs the real entry point.
    binary.write_text(f'#!/bin/sh\nexec {venv_entry_point()} "$@"\n', encoding="utf-8")
    binary.chmod(0o755)
    return root


def verify_in_root(root: Path) -> subprocess.CompletedProcess[str]:
    # --man=no: the unit has no man: Documentation= links, and man pages may be absent (slim images).
    # --recursive-errors=one: our unit and its direct dependencies (a missing one is reported), not every unit of
    # the host that those pull in ("no" would not even report a missing dependency).
    return run_analyze("verify", "--man=no", "--recursive-errors=one", f"--root={root}", UNIT_NAME)


@needs_analyze
@pytest.mark.skipif(not SYSTEM_UNITS.is_dir(), reason=f"{SYSTEM_UNITS} is missing (no systemd units installed)")
def test_verify_the_unit_verbatim_in_a_scratch_root(tmp_path: Path) -> None:
    root = scratch_root(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = verify_in_root(root)
    problems = ours(result.stderr)
    assert result.returncode == 0 and not problems, f"verify (rc {result.returncode}):\n" + "\n".join(problems)


@needs_analyze
@pytest.mark.skipif(not SYSTEM_UNITS.is_dir(), reason=f"{SYSTEM_UNITS} is missing (no systemd units installed)")
def test_verify_catches_a_typo_so_a_clean_result_means_something(tmp_path: Path) -> None:
    """The same check on a unit with a misspelt directive and a bad value must complain (no vacuous pass)."""
    broken = UNIT.read_text(encoding="utf-8").replace("ProtectClock=yes", "ProtectClok=yes")
    broken = broken.replace("WatchdogSec=30", "WatchdogSec=thirty")
    result = verify_in_root(scratch_root(tmp_path, broken))
    problems = "\n".join(ours(result.stderr))
    assert "Unknown key 'ProtectClok'" in problems
    assert "thirty" in problems
    # And a dependency that cannot be loaded is reported too.
    root = scratch_root(tmp_path / "nodeps", UNIT.read_text(encoding="utf-8"))
    (root / "lib/systemd/system/sysinit.target").unlink()
    result = verify_in_root(root)
    assert result.returncode != 0
    assert "sysinit.target not found" in "\n".join(ours(result.stderr))


@needs_analyze
def test_verify_a_copy_pointing_at_the_virtualenvs_entry_point(tmp_path: Path) -> None:
    """Outside a root: this machine's own unit set, and ExecStart naming the real ``venue-agent`` script."""
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"ExecStart={EXEC_START.split()[0]} ") == 1
    copy = tmp_path / UNIT_NAME
    copy.write_text(text.replace(f"ExecStart={EXEC_START.split()[0]} ", f"ExecStart={venv_entry_point()} "))
    result = run_analyze("verify", "--man=no", "--recursive-errors=one", str(copy))
    problems = ours(result.stderr)
    assert result.returncode == 0 and not problems, f"verify (rc {result.returncode}):\n" + "\n".join(problems)


def test_fd_limit_leaves_room_for_intake_and_the_reserve(unit: configparser.RawConfigParser) -> None:
    """LimitNOFILE= is well above the intake cap plus the descriptors kept for the outbox, POS and printers."""
    from agent.domain.config import IntakeSettings
    from agent.service.descriptors import RESERVED

    limit = int(one(unit, "Service", "LimitNOFILE"))
    assert limit >= 4 * (IntakeSettings().max_connections + RESERVED)


def test_documentation_names_only_what_the_package_installs(unit: configparser.RawConfigParser) -> None:
    """``systemctl help venue-agent`` opens Documentation=: each entry must exist on the box (no man page ships)."""
    build = (UNIT.parent.parent / "packaging" / "build-deb").read_text(encoding="utf-8")
    uris = words(unit, "Unit", "Documentation")
    assert uris, "the unit has no Documentation="
    installed = {
        "/opt/venue-agent/share/doc/venue-agent/README.md": 'install -m 0644 README.md "$VENV/share/doc/$PKG/README.md"'
    }
    for uri in uris:
        scheme, _, rest = uri.partition(":")
        assert scheme in {"file", "man", "http", "https", "info"}, f"Documentation={uri} is not a URI systemd opens"
        assert scheme == "file", f"Documentation={uri}: the package ships no man or info page and names no web site"
        path = rest.removeprefix("//")
        assert path in installed, f"Documentation={uri} names a file build-deb does not install"
        assert installed[path] in build


def test_the_config_directory_is_read_only_inside_the_sandbox(unit: configparser.RawConfigParser) -> None:
    """ConfigurationDirectory= is exempt from ProtectSystem=strict (systemd.exec(5)); ReadOnlyPaths= takes it back."""
    assert one(unit, "Service", "ConfigurationDirectory") == "venue-agent"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert "/etc/venue-agent" in words(unit, "Service", "ReadOnlyPaths")
    writable = words(unit, "Service", "ReadWritePaths")
    assert not [p for p in writable if p.startswith("/etc")], f"ReadWritePaths= opens /etc again: {writable}"


def test_every_timeout_stop_sec_quoted_in_the_repository_is_the_units(unit: configparser.RawConfigParser) -> None:
    """prerm, the packaging notes and the README quote the stop timeout: they must say what the unit says."""
    stop = one(unit, "Service", "TimeoutStopSec")
    repo = UNIT.parent.parent
    files = [
        *sorted((repo / "packaging").iterdir()),
        repo / "README.md",
        repo / "packaging" / "README.md",
    ]
    quoted = {
        f"{path.relative_to(repo)}: TimeoutStopSec={value}"
        for path in files
        if path.is_file()
        for value in re.findall(r"TimeoutStopSec=(\d+\w*)", path.read_text(encoding="utf-8", errors="replace"))
    }
    assert any(q.startswith("packaging/prerm") for q in quoted), "prerm no longer says how long a stop may take"
    wrong = sorted(q for q in quoted if not q.endswith(f"TimeoutStopSec={stop}"))
    assert not wrong, f"the unit says TimeoutStopSec={stop}, these say otherwise: {wrong}"
