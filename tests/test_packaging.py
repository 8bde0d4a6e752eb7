"""The Debian package (packaging/): maintainer scripts against stubs, static checks, and the full build.

The maintainer scripts run for real (``/bin/sh``) in a fake target system under ``tmp_path``: ``$DPKG_ROOT``
points their paths there (dpkg itself sets it for ``dpkg --root``), and PATH holds only stubs that record
their arguments (adduser, deluser, getent, systemctl, deb-systemd-helper, ...) plus a few harmless tools,
so nothing can touch the machine running the tests. The full ``build-deb`` + ``test-deb`` (a venv with
every dependency, a debootstrapped Debian root) runs only with ``VENUE_AGENT_BUILD_DEB=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.domain.config import settings_from_dict
from agent.domain.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
UNIT = REPO / "systemd" / "venue-agent.service"
SCRIPTS = ("postinst", "prerm", "postrm")

# Each stub appends "name arg arg ..." to $CALLS. $STATE holds the fake system: users/groups in
# $STATE/db ("passwd NAME", "group NAME"), switches as files (config_rc, statoverride, was-disabled).
RECORD = 'printf "%s" "${0##*/}" >>"$CALLS"; for a in "$@"; do printf " %s" "$a" >>"$CALLS"; done; echo >>"$CALLS"\n'
STUBS = {
    "adduser": RECORD + 'case " $* " in *" --system "*) for n; do :; done; echo "passwd $n" >>"$STATE/db"; '
    'echo "group $n" >>"$STATE/db";; esac\n',
    "deluser": RECORD + 'for n; do :; done; grep -vx "passwd $n" "$STATE/db" >"$STATE/db.new" || true; '
    'mv "$STATE/db.new" "$STATE/db"\n',
    "delgroup": RECORD + 'for n; do :; done; grep -vx "group $n" "$STATE/db" >"$STATE/db.new" || true; '
    'mv "$STATE/db.new" "$STATE/db"\n',
    "getent": 'grep -qx "$1 $2" "$STATE/db" || exit 2\necho "$2:x:999:999::/nonexistent:/usr/sbin/nologin"\n',
    "chown": RECORD,
    "systemctl": RECORD,
    "deb-systemd-invoke": RECORD,
    "deb-systemd-helper": RECORD + 'if [ "$2" = was-enabled ] && [ -e "$STATE/was-disabled" ]; then exit 1; fi\n',
    "dpkg-statoverride": RECORD + '[ -e "$STATE/statoverride" ]\n',
    "udevadm": RECORD,
}
TOOLS = ("cat", "chmod", "find", "rm", "grep", "mv")


class Box:
    """A fake target system: a root for $DPKG_ROOT, stub commands, and the calls they recorded."""

    def __init__(self, tmp_path: Path, *, systemd: bool = True, config_valid: bool = False) -> None:
        self.root = tmp_path / "root"
        self.state = tmp_path / "state"
        self.calls_file = tmp_path / "calls.log"
        self.bin = tmp_path / "bin"
        for directory in (self.root, self.state, self.bin):
            directory.mkdir()
        (self.state / "db").write_text("group dialout\ngroup lp\n")
        for name, body in STUBS.items():
            self._script(self.bin / name, body)
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is needed to run the maintainer scripts"
            (self.bin / tool).symlink_to(found)
        # What the package's files look like once unpacked, plus state the agent made while running.
        self.config = self.root / "etc/venue-agent/agent.toml"
        self.config.parent.mkdir(parents=True)
        self.config.write_text((PACKAGING / "agent.toml").read_text())
        self.outbox = self.root / "var/lib/venue-agent/outbox.db"
        self.outbox.parent.mkdir(parents=True)
        self.outbox.write_bytes(b"SQLite format 3\0")
        self.cache = self.root / "var/cache/venue-agent"
        self.cache.mkdir(parents=True)
        self.pycache = self.root / "opt/venue-agent/lib/python3.11/site-packages/agent/__pycache__"
        self.pycache.mkdir(parents=True)
        (self.pycache / "cli.cpython-311.pyc").write_bytes(b"")
        self._script(self.root / "opt/venue-agent/bin/venue-agent", RECORD + 'exit "$(cat "$STATE/config_rc")"\n')
        self.set_config_valid(config_valid)
        if systemd:
            (self.root / "run/systemd/system").mkdir(parents=True)

    @staticmethod
    def _script(path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def set_config_valid(self, valid: bool) -> None:
        (self.state / "config_rc").write_text("0" if valid else "2")

    def add_user(self) -> None:
        with (self.state / "db").open("a") as db:
            db.write("passwd venue-agent\ngroup venue-agent\n")

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls_file.write_text("")
        env = {
            "PATH": str(self.bin),
            "DPKG_ROOT": str(self.root),
            "CALLS": str(self.calls_file),
            "STATE": str(self.state),
        }
        return subprocess.run(
            ["/bin/sh", str(PACKAGING / script), *args], env=env, capture_output=True, text=True, timeout=60
        )

    def calls(self, command: str | None = None) -> list[str]:
        lines = self.calls_file.read_text().splitlines()
        return [c for c in lines if command is None or c.split(" ", 1)[0] == command]

    def users(self) -> set[str]:
        return set((self.state / "db").read_text().splitlines())


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


# --- postinst ------------------------------------------------------------------------------------------


def test_fresh_install_with_placeholder_config_enables_but_does_not_start(tmp_path: Path) -> None:
    box = Box(tmp_path)
    result = box.run("postinst", "configure", "")
    _ok(result)
    assert "adduser --quiet --system --group --home /var/lib/venue-agent --no-create-home" in (box.calls("adduser")[0])
    assert box.calls("adduser")[0].endswith(" venue-agent")
    assert "adduser --quiet venue-agent dialout" in box.calls("adduser")
    assert "adduser --quiet venue-agent lp" in box.calls("adduser")
    assert {"passwd venue-agent", "group venue-agent"} <= box.users()
    assert f"chown root:venue-agent {box.root}/etc/venue-agent" in box.calls("chown")
    assert f"chown root:venue-agent {box.config}" in box.calls("chown")
    assert oct(box.config.stat().st_mode & 0o777) == "0o640"
    assert oct(box.config.parent.stat().st_mode & 0o777) == "0o750"
    assert "deb-systemd-helper enable venue-agent.service" in box.calls("deb-systemd-helper")
    assert box.calls("systemctl") == ["systemctl --system daemon-reload"]
    assert box.calls("venue-agent") == [f"venue-agent config check --config {box.config}"]
    assert box.calls("deb-systemd-invoke") == []
    assert "NOT started" in result.stderr
    assert "sudoedit /etc/venue-agent/agent.toml" in result.stderr


def test_fresh_install_with_valid_config_starts(tmp_path: Path) -> None:
    box = Box(tmp_path, config_valid=True)
    result = box.run("postinst", "configure", "")
    _ok(result)
    assert box.calls("deb-systemd-invoke") == ["deb-systemd-invoke start venue-agent.service"]
    assert "NOT started" not in result.stderr


def test_upgrade_restarts_and_keeps_the_existing_user(tmp_path: Path) -> None:
    box = Box(tmp_path, config_valid=True)
    box.add_user()
    _ok(box.run("postinst", "configure", "0.0.9-1"))
    assert not [c for c in box.calls("adduser") if "--system" in c]
    assert box.calls("deb-systemd-invoke") == ["deb-systemd-invoke restart venue-agent.service"]
    assert "deb-systemd-helper enable venue-agent.service" in box.calls("deb-systemd-helper")


def test_upgrade_keeps_a_unit_the_admin_disabled_disabled(tmp_path: Path) -> None:
    box = Box(tmp_path, config_valid=True)
    box.add_user()
    (box.state / "was-disabled").touch()
    _ok(box.run("postinst", "configure", "0.0.9-1"))
    helper = box.calls("deb-systemd-helper")
    assert "deb-systemd-helper enable venue-agent.service" not in helper
    assert "deb-systemd-helper update-state venue-agent.service" in helper


def test_upgrade_with_a_config_that_no_longer_validates_leaves_the_agent_running(tmp_path: Path) -> None:
    box = Box(tmp_path, config_valid=False)
    box.add_user()
    result = box.run("postinst", "configure", "0.0.9-1")
    _ok(result)
    assert box.calls("deb-systemd-invoke") == []
    assert "NOT started" in result.stderr


def test_without_running_systemd_nothing_is_started_but_the_unit_is_enabled(tmp_path: Path) -> None:
    box = Box(tmp_path, systemd=False, config_valid=True)
    _ok(box.run("postinst", "configure", ""))
    assert box.calls("systemctl") == []
    assert box.calls("deb-systemd-invoke") == []
    assert "deb-systemd-helper enable venue-agent.service" in box.calls("deb-systemd-helper")


def test_configure_twice_is_idempotent(tmp_path: Path) -> None:
    box = Box(tmp_path)
    _ok(box.run("postinst", "configure", ""))
    first = box.calls()
    _ok(box.run("postinst", "configure", ""))
    second = box.calls()
    # The second run finds the user and does not create it again; everything else is the same.
    assert [c for c in first if not c.startswith("adduser --quiet --system")] == second
    assert sorted(box.users()).count("passwd venue-agent") == 1


def test_a_statoverride_keeps_the_admins_permissions(tmp_path: Path) -> None:
    box = Box(tmp_path)
    (box.state / "statoverride").touch()
    box.config.chmod(0o600)
    _ok(box.run("postinst", "configure", ""))
    assert box.calls("chown") == []
    assert oct(box.config.stat().st_mode & 0o777) == "0o600"


def test_postinst_names_plugged_in_printers_at_once_where_udevd_runs(tmp_path: Path) -> None:
    """A printer plugged in before the install gets its /dev/venue-printer/ link without a replug."""
    box = Box(tmp_path)
    control = box.root / "run/udev/control"
    control.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(control))
        _ok(box.run("postinst", "configure", ""))
    assert box.calls("udevadm") == [
        "udevadm control --reload-rules",
        "udevadm trigger --action=add --subsystem-match=usbmisc",
    ]


def test_postinst_leaves_udev_alone_without_udevd(tmp_path: Path) -> None:
    """In a chroot or container (no /run/udev/control) there is no udevd to ask."""
    box = Box(tmp_path)
    _ok(box.run("postinst", "configure", ""))
    assert box.calls("udevadm") == []


def test_postinst_abort_upgrade_does_nothing(tmp_path: Path) -> None:
    box = Box(tmp_path)
    _ok(box.run("postinst", "abort-upgrade", "0.0.9-1"))
    assert box.calls() == []


# --- prerm / postrm ------------------------------------------------------------------------------------


def test_prerm_remove_stops_the_service_and_drops_bytecode(tmp_path: Path) -> None:
    box = Box(tmp_path)
    _ok(box.run("prerm", "remove"))
    assert box.calls("deb-systemd-invoke") == ["deb-systemd-invoke stop venue-agent.service"]
    assert not box.pycache.exists()


def test_prerm_upgrade_leaves_the_service_running(tmp_path: Path) -> None:
    box = Box(tmp_path)
    _ok(box.run("prerm", "upgrade", "0.2.0-1"))
    assert box.calls("deb-systemd-invoke") == []
    assert not box.pycache.exists()


def test_postrm_remove_keeps_outbox_config_and_user(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.add_user()
    _ok(box.run("postrm", "remove"))
    assert box.outbox.read_bytes() == b"SQLite format 3\0"
    assert box.config.is_file()
    assert "passwd venue-agent" in box.users()
    assert box.calls("deluser") == []
    assert "deb-systemd-helper mask venue-agent.service" in box.calls("deb-systemd-helper")


def test_postrm_purge_removes_outbox_cache_config_and_user(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.add_user()
    _ok(box.run("postrm", "purge"))
    assert not (box.root / "var/lib/venue-agent").exists()
    assert not box.cache.exists()
    assert not (box.root / "etc/venue-agent").exists()
    assert box.calls("deluser") == ["deluser --quiet --system venue-agent"]
    assert box.calls("delgroup") == ["delgroup --quiet --system --only-if-empty venue-agent"]
    assert "passwd venue-agent" not in box.users()
    assert "group venue-agent" not in box.users()
    assert "deb-systemd-helper purge venue-agent.service" in box.calls("deb-systemd-helper")


def test_postrm_purge_without_adduser_installed_still_succeeds(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.add_user()
    (box.bin / "deluser").unlink()
    (box.bin / "delgroup").unlink()
    _ok(box.run("postrm", "purge"))
    assert not (box.root / "var/lib/venue-agent").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_action_fails(tmp_path: Path, script: str) -> None:
    box = Box(tmp_path)
    result = box.run(script, "frobnicate")
    assert result.returncode == 1
    assert "unknown argument" in result.stderr


# --- static checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_maintainer_scripts_are_posix_sh(script: str) -> None:
    path = PACKAGING / script
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -e\n" in text
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["sh", "-n", str(path)], check=True)
    if shutil.which("dash"):
        subprocess.run(["dash", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", ["build-deb", "test-deb", "boot-test"])
def test_build_scripts_are_strict_bash(script: str) -> None:
    path = PACKAGING / script
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in path.read_text()
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_shellcheck() -> None:
    subprocess.run(["shellcheck", "-s", "sh", *(str(PACKAGING / s) for s in SCRIPTS)], check=True)
    scripts = ("build-deb", "test-deb", "boot-test")
    subprocess.run(["shellcheck", *(str(PACKAGING / s) for s in scripts), str(REPO / ".ci" / "run")], check=True)


def test_ci_builds_the_package_and_boots_it() -> None:
    """CI boots the package it has just built, and a failed check fails CI; the test suite closes the run."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "set -o errexit" in ci
    build, boot = ci.index('OUT_DIR="$dist" packaging/build-deb'), ci.index('packaging/boot-test "$dist"/venue-agent_')
    assert ci.index("scripts/setup") < build < boot < ci.index("scripts/test -q")
    assert "|| true" not in ci[build:]
    setup = (REPO / "scripts" / "setup").read_text()
    for package in ("systemd-container", "debootstrap", "curl", "python3-venv"):
        assert f"missing+=({package})" in setup


def test_boot_test_skips_only_for_an_unreachable_mirror() -> None:
    """Every exit path of the boot test: 0 after all checks passed or a loud SKIPPED (no mirror), else not 0."""
    text = (PACKAGING / "boot-test").read_text()
    assert text.count("exit 3") == 2  # the mirror probe and a debootstrap that could not download
    assert 'if [ "$rc" -eq 3 ]; then' in text
    skipped = text[text.index('if [ "$rc" -eq 3 ]; then') :]
    assert "SKIPPED !!! BOOT TEST NOT RUN" in skipped.split("exit 0")[0]
    assert text.rstrip().endswith('[ "$failures" -eq 0 ]')


def _control_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in (PACKAGING / "control.in").read_text().splitlines():
        if line.startswith(" "):
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields


def test_control_fields() -> None:
    fields = _control_fields()
    assert fields["Package"] == "venue-agent"
    assert fields["Version"] == "@VERSION@"
    assert fields["Architecture"] == "@ARCH@"
    assert fields["Maintainer"] == "@MAINTAINER@"
    depends = [d.strip().split(" ")[0] for d in fields["Depends"].split(",")]
    # @PYTHON@ becomes python3.X: the interpreter the venv was built with (its symlinks point there).
    assert {"@PYTHON@", "libc6", "adduser", "systemd", "tzdata", "libusb-1.0-0"} <= set(depends)
    synopsis, *body = fields["Description"].split("\n")
    assert 0 < len(synopsis) <= 80
    assert body


def test_build_script_declares_the_conffile_and_builds_as_root_owned() -> None:
    text = (PACKAGING / "build-deb").read_text()
    assert "printf '/etc/venue-agent/agent.toml\\n' >\"$ROOT/DEBIAN/conffiles\"" in text
    assert "dpkg-deb --root-owner-group" in text
    assert 'ln -s "$PREFIX/bin/venue-agent" "$ROOT/usr/bin/venue-agent"' in text
    assert "systemd/venue-agent.service is missing" in text


def test_shipped_config_refuses_to_start_until_venue_and_pos_are_set() -> None:
    raw = tomllib.loads((PACKAGING / "agent.toml").read_text())
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    keys = {p.key for p in caught.value.problems}
    assert keys == {"venue.id", "pos.driver"}
    # Setting the two lines marked "SET THIS" is all it takes.
    raw["venue"]["id"] = "harbour-kitchen"
    raw["pos"]["driver"] = "http"
    raw["pos"]["http"] = {"url": "http://192.0.2.10:8080/orders"}
    settings = settings_from_dict(raw)
    assert settings.intake.host == "127.0.0.1"
    assert settings.mqtt.enabled is False


def test_lintian_overrides_each_have_a_reason() -> None:
    lines = (PACKAGING / "lintian-overrides").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("venue-agent: "):
            previous = lines[index - 1]
            assert previous.startswith("#"), f"no comment says why: {line}"


@pytest.mark.skipif(not UNIT.is_file(), reason="systemd/venue-agent.service does not exist yet")
def test_unit_agrees_with_the_package() -> None:
    unit = UNIT.read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Za-z]+=", line) and "=" in line)
    assert settings["ExecStart"].startswith("/opt/venue-agent/bin/venue-agent run")
    assert settings["User"] == "venue-agent"  # the user postinst creates and postrm purges
    assert settings["StateDirectory"] == "venue-agent"  # /var/lib/venue-agent: kept on remove, purged
    assert settings.get("CacheDirectory", "venue-agent") == "venue-agent"  # /var/cache/venue-agent: purged
    # The unit's Documentation= is the README build-deb installs (the build script's comment says so too).
    assert settings["Documentation"] == "file:///opt/venue-agent/share/doc/venue-agent/README.md"
    build = (PACKAGING / "build-deb").read_text()
    assert 'install -m 0644 README.md "$VENV/share/doc/$PKG/README.md"' in build
    assert "# The unit's Documentation= points here." in build
    # Printers' device nodes are group lp (the udev rules the package ships): the service must be in it.
    rules = (PACKAGING / "udev" / "60-venue-agent-printers.rules").read_text()
    assert 'GROUP="lp", MODE="0660"' in rules
    assert "lp" in settings["SupplementaryGroups"].split()
    assert (
        'install -m 0644 "$here/udev/60-venue-agent-printers.rules" '
        '"$ROOT/lib/udev/rules.d/60-venue-agent-printers.rules"' in build
    )


def test_the_package_ships_every_page_the_readme_links_beside_it() -> None:
    """On the box the README's relative links (docs/x.md, config/example.toml) reach files: build-deb installs them."""
    build = (PACKAGING / "build-deb").read_text()
    shipped = set()
    for sources, dest in re.findall(r'^install -m 0644 (.+?) "\$VENV/share/doc/\$PKG/([^"]*)"$', build, re.M):
        files = [f for pattern in sources.split() for f in sorted(REPO.glob(pattern))]
        assert files, f"build-deb installs {sources}, which names no file"
        if dest.endswith("/"):
            shipped |= {dest + f.name for f in files}
        else:
            assert len(files) == 1, f"build-deb installs {sources} as one file, {dest}"
            shipped.add(dest)
    readme = (REPO / "README.md").read_text()
    linked = {link.partition("#")[0] for link in re.findall(r"\]\(([^)\s:#]+(?:#[^)\s]*)?)\)", readme)}
    assert {"docs/architecture.md", "config/example.toml"} <= linked
    assert sorted(link for link in linked if (REPO / link).is_file() and link not in shipped) == []


# --- the full build (slow) -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(
    os.environ.get("VENUE_AGENT_BUILD_DEB") != "1",
    reason="the full package build is slow: set VENUE_AGENT_BUILD_DEB=1 (or run packaging/build-deb && "
    "packaging/test-deb dist/*.deb)",
)
def test_build_and_test_the_package(tmp_path: Path) -> None:
    env = {**os.environ, "OUT_DIR": str(tmp_path)}
    subprocess.run([str(PACKAGING / "build-deb")], check=True, env=env, timeout=900)
    (deb,) = tmp_path.glob("venue-agent_*.deb")
    subprocess.run([str(PACKAGING / "test-deb"), str(deb)], check=True, timeout=900)


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("systemd-nspawn", "nsenter", "curl", "dpkg-deb")),
    reason="the boot test needs root, systemd-nspawn, nsenter, curl and dpkg-deb (scripts/setup installs them)",
)
def test_boot_test_says_skipped_loudly_when_the_mirror_cannot_be_reached(tmp_path: Path) -> None:
    """No cached root and no mirror: the boot test cannot boot anything and says so, with the reason; exit 0."""
    deb = tmp_path / "venue-agent_0.0.0-1_all.deb"
    deb.write_bytes(b"not looked at: there is no root to install it in")
    env = {
        **os.environ,
        "BOOT_TEST_CACHE": str(tmp_path / "cache"),
        "BOOT_TEST_MIRROR": "http://127.0.0.1:9/debian",
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        [str(PACKAGING / "boot-test"), str(deb)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIPPED !!! BOOT TEST NOT RUN" in result.stdout
    assert "http://127.0.0.1:9/debian cannot be reached" in result.stdout
    assert "ok   " not in result.stdout and "FAIL " not in result.stdout
    # Nothing was left behind: no work directory, no half-written root in the cache.
    assert {p.name for p in tmp_path.iterdir()} <= {deb.name, "cache"}
    assert not list(tmp_path.glob("cache/*"))
