"""Where a relative ``*_file`` secret is read from, by the service and by a technician (agent/domain/credentials.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.domain import credentials
from agent.domain.config import load_settings
from agent.domain.credentials import Unit, UnitCredential, locate, parse_unit, service_sees, unit_files
from agent.domain.errors import ConfigError

SHIPPED_UNIT = Path(__file__).resolve().parent.parent / "systemd" / "venue-agent.service"


def test_the_shipped_unit_loads_no_credential_until_a_drop_in_adds_them() -> None:
    """The package's unit has the LoadCredential= lines commented out; its StateDirectory is venue-agent."""
    unit = parse_unit([(SHIPPED_UNIT, SHIPPED_UNIT.read_text(encoding="utf-8"))])
    assert unit.loaded == {} and unit.state_directory == "venue-agent"
    dropin = Path("/etc/systemd/system/venue-agent.service.d/override.conf")
    text = "[Service]\nLoadCredential=intake-token:/etc/venue-agent/credentials/intake-token\n"
    both = parse_unit([(SHIPPED_UNIT, SHIPPED_UNIT.read_text(encoding="utf-8")), (dropin, text)])
    assert both.loaded["intake-token"] == UnitCredential(
        "intake-token", "/etc/venue-agent/credentials/intake-token", dropin
    )
    assert both.provides("intake-token") and not both.provides("lsk-client-secret")


def test_unit_syntax_continuations_comments_resets_and_other_sections() -> None:
    """Continued lines join, comments and other sections are ignored, a later line wins, an empty one resets."""
    first = Path("/lib/systemd/system/venue-agent.service")
    second = Path("/etc/systemd/system/venue-agent.service.d/10-creds.conf")
    unit = parse_unit(
        [
            (
                first,
                "[Unit]\nLoadCredential=ignored:/x\n[Service]\nLoadCredential=old:/a\nStateDirectory=venue-agent\n",
            ),
            (
                second,
                "# a comment\n; another\n[Service]\nLoadCredential=\nLoadCredential=tok:\\\n  %E/venue-agent/tok\n"
                "LoadCredentialEncrypted=lsk:/etc/credstore.encrypted/lsk\nSetCredential=inline:value\n"
                "ImportCredential=venue.*\nLoadCredential=tok:/etc/venue-agent/credentials/tok\n",
            ),
        ]
    )
    assert set(unit.loaded) == {"tok", "lsk"}
    assert unit.loaded["tok"].source == "/etc/venue-agent/credentials/tok"
    assert unit.loaded["lsk"].encrypted
    assert unit.provides("inline") and unit.provides("venue.mqtt") and not unit.provides("old")
    assert unit.files == (first, second)


def test_continued_line_expands_specifiers() -> None:
    """``%E`` is /etc, and a backslash continues the line (the space systemd puts for it is not part of the path)."""
    unit = parse_unit([(Path("/u"), "[Service]\nLoadCredential=tok:\\\n%E/venue-agent/tok\n")])
    assert unit.loaded["tok"].source == "/etc/venue-agent/tok"


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=20))
def test_any_text_parses_without_raising(lines: list[str]) -> None:
    """A unit file is read, never trusted to be well-formed: any text gives a Unit."""
    parse_unit([(Path("/u"), "\n".join(["[Service]", *lines]))])


def test_drop_ins_in_a_higher_directory_mask_lower_ones(tmp_path: Path) -> None:
    """The unit file comes from the first directory that has it; drop-ins by name, /etc over /lib, sorted."""
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    for directory in (etc, lib):
        (directory / "venue-agent.service.d").mkdir(parents=True)
    (lib / "venue-agent.service").write_text("[Service]\n")
    (lib / "venue-agent.service.d" / "10-a.conf").write_text("[Service]\nLoadCredential=a:/lib\n")
    (lib / "venue-agent.service.d" / "20-b.conf").write_text("[Service]\nLoadCredential=b:/lib\n")
    (etc / "venue-agent.service.d" / "10-a.conf").write_text("[Service]\nLoadCredential=a:/etc\n")
    files = unit_files([etc, lib])
    assert files == [
        lib / "venue-agent.service",
        etc / "venue-agent.service.d" / "10-a.conf",
        lib / "venue-agent.service.d" / "20-b.conf",
    ]
    assert unit_files([etc]) == []  # drop-ins without a unit: nothing installed


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CREDENTIALS_DIRECTORY first; then the unit's LoadCredential= source; then /etc/venue-agent/credentials."""
    monkeypatch.setattr(credentials, "CREDENTIALS_DIR", tmp_path / "conventional")
    monkeypatch.setattr(credentials, "CREDSTORE_DIRS", (tmp_path / "credstore", tmp_path / "run-credstore"))
    (tmp_path / "run-credstore").mkdir()
    (tmp_path / "run-credstore" / "from-store").write_text("x")
    origin = tmp_path / "override.conf"
    unit = Unit(
        (origin,),
        {
            "tok": UnitCredential("tok", "/srv/secrets/tok", origin),
            "rel": UnitCredential("rel", "from-store", origin),
            "bare": UnitCredential("bare", "", origin),
        },
    )
    assert locate("tok", environ={"CREDENTIALS_DIRECTORY": "/run/credentials/x"}, unit=unit).path == Path(
        "/run/credentials/x/tok"
    )
    found = locate("tok", environ={}, unit=unit)
    assert found.path == Path("/srv/secrets/tok") and f"LoadCredential=tok in {origin}" in found.how
    assert locate("rel", environ={}, unit=unit).path == tmp_path / "run-credstore" / "from-store"
    bare = locate("bare", environ={}, unit=unit)
    assert bare.path == tmp_path / "credstore" / "bare" and len(bare.searched) == 2
    other = locate("other", environ={}, unit=unit)
    assert other.path == tmp_path / "conventional" / "other" and "no LoadCredential=other" in other.how
    assert locate("/abs/x", environ={"CREDENTIALS_DIRECTORY": "/c"}, unit=unit).path == Path("/abs/x")


def test_service_sees_what_the_unit_hands_over() -> None:
    """A name the unit does not load, or a path its sandbox hides, is a problem; without a unit nothing is judged."""
    unit = Unit((Path("/u"),), {"tok": UnitCredential("tok", "/etc/venue-agent/credentials/tok", Path("/u"))})
    assert service_sees("tok", locate("tok", environ={}, unit=unit), unit) is None
    missing = service_sees("lsk", locate("lsk", environ={}, unit=unit), unit)
    assert missing is not None and "LoadCredential=lsk:/etc/venue-agent/credentials/lsk" in missing
    hidden = service_sees("/tmp/tok", locate("/tmp/tok", environ={}, unit=unit), unit)
    assert hidden is not None and "PrivateTmp=yes" in hidden
    home = service_sees("/root/tok", locate("/root/tok", environ={}, unit=unit), unit)
    assert home is not None and "ProtectHome=yes" in home
    assert service_sees("lsk", locate("lsk", environ={}, unit=Unit()), Unit()) is None


GOOD = """
[venue]
id = "harbour-kitchen"
[intake]
listen = "0.0.0.0:8787"
token_file = "intake-token"
[pos]
driver = "http"
[pos.http]
url = "http://127.0.0.1:9/orders"
"""


def test_without_credentials_directory_the_service_reads_what_the_unit_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no $CREDENTIALS_DIRECTORY (a technician's sudo), the config loads from the unit's LoadCredential= source."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    units = tmp_path / "systemd"
    (units / "venue-agent.service.d").mkdir(parents=True)
    (units / "venue-agent.service").write_text(SHIPPED_UNIT.read_text(encoding="utf-8"))
    secret = tmp_path / "secrets" / "intake-token"
    secret.parent.mkdir()
    secret.write_text("intake-secret-value\n")
    (units / "venue-agent.service.d" / "override.conf").write_text(f"[Service]\nLoadCredential=intake-token:{secret}\n")
    monkeypatch.setattr(credentials, "UNIT_DIRS", (units,))
    monkeypatch.setattr(credentials, "CREDENTIALS_DIR", tmp_path / "nowhere")
    config = tmp_path / "agent.toml"
    config.write_text(GOOD)
    settings, _ = load_settings(config)
    assert settings.intake.token is not None and settings.intake.token.get_secret_value() == "intake-secret-value"
    (units / "venue-agent.service.d" / "override.conf").unlink()
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    [problem] = caught.value.problems
    assert problem.key == "intake.token_file"
    assert str(tmp_path / "nowhere" / "intake-token") in problem.message and "no LoadCredential" in problem.message
