"""What a technician sees at the command line: config problems worded to act on, config init, help, tables."""

from __future__ import annotations

import re
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.cli.table import table
from agent.outbox import snoozes
from agent.outbox.store import Outbox

REPO = Path(__file__).resolve().parent.parent
BASE = '[venue]\nid = "harbour-kitchen"\ntimezone = "Europe/London"\n[pos]\ndriver = "simulator"\n'


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``config check`` on ``text``; return the exit code and stderr."""
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    code = main(["config", "check", "--config", str(path)])
    return code, capsys.readouterr().err


def test_a_misspelt_key_gets_the_closest_valid_key_at_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``timeout_secnds`` under [pos] suggests ``timeout_seconds``; a misspelt table suggests the table."""
    code, err = check(tmp_path, BASE + "timeout_secnds = 5\n[injetion]\nmax_attempts = 3\n", capsys)
    assert code == 2
    assert "pos.timeout_secnds: unknown key; did you mean `timeout_seconds`?" in err, err
    assert "injetion: unknown key; did you mean `injection`?" in err, err
    # Nothing close: no guess.
    code, err = check(tmp_path, BASE + "frobnicate = 1\n", capsys)
    assert "pos.frobnicate: unknown key (is it misspelt?)" in err and "did you mean" not in err


def test_printers_are_named_by_name_in_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pydantic problem, a missing key, a misspelt key and a profile problem all say printers[<name>]."""
    printers = (
        '[[printers]]\nname = "kitchen"\nconnection = "network"\nhost = "10.0.0.5"\ncolumns = 40\n'
        '[[printers]]\nname = "bar"\nconnection = "network"\n'
        '[[printers]]\nname = "grill"\nconnection = "network"\nhost = "10.0.0.6"\ncolum = 42\n'
    )
    code, err = check(tmp_path, BASE + printers, capsys)
    assert code == 2
    assert "printers[kitchen].columns:" in err and "printers[bar].host: required" in err, err
    assert "printers[grill].colum: unknown key; did you mean `columns`?" in err, err
    assert not re.search(r"printers\.\d", err), err
    profile = '[[printers]]\nname = "pass"\nconnection = "network"\nhost = "10.0.0.5"\nprofile = "TM-T20X"\n'
    code, err = check(tmp_path, BASE + profile, capsys)
    assert code == 2 and "printers[pass].profile:" in err, err


def test_a_toml_syntax_error_shows_the_line_with_a_caret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The offending line is printed with its number, and a caret under the column tomllib names."""
    code, err = check(tmp_path, BASE + "timeout_seconds 10\n", capsys)
    assert code == 2
    lines = err.splitlines()
    [source] = [i for i, line in enumerate(lines) if "6 | timeout_seconds 10" in line]
    assert "(at line 6, column 17)" in err
    caret = lines[source + 1]
    assert caret.index("^") == lines[source].index("timeout_seconds 10") + len("timeout_seconds "), err


def test_an_invalid_venue_id_is_explained_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No regular expression: what characters are allowed, how long, and an example."""
    code, err = check(tmp_path, BASE.replace('"harbour-kitchen"', '"Harbour Kitchen"'), capsys)
    assert code == 2
    assert "venue.id: must be 1 to 64 characters" in err and "lowercase letter" in err, err
    assert "(got 'Harbour Kitchen')" in err and "[a-z0-9-]" not in err


def test_without_a_config_file_config_init_starts_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file: the error says how to start one; config init writes the example, refusing to overwrite."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = tmp_path / "etc" / "agent.toml"
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no config file found" in err and f"venue-agent config init --config {path}" in err, err

    assert main(["config", "init", "--config", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    example = (REPO / "config" / "example.toml").read_text(encoding="utf-8")
    assert path.read_text(encoding="utf-8") == example

    path.write_text(BASE, encoding="utf-8")
    assert main(["config", "init", "--config", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == BASE, "kept without --force"
    assert main(["config", "init", "--config", str(path), "--force"]) == 0
    assert path.read_text(encoding="utf-8") == example
    assert main(["config", "check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_the_example_config_ships_inside_the_package() -> None:
    """The wheel carries config/example.toml as agent/example.toml, where config init reads it when installed."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["config/example.toml"] == "agent/example.toml"


@pytest.mark.parametrize(("group", "actions"), [("config", ("check", "show", "init")), ("orders", ("list", "show"))])
def test_a_command_group_without_its_action_prints_its_help(
    group: str, actions: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """``venue-agent config`` shows the config help (not the top-level one) and exits 2 like any usage error."""
    assert main([group]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: venue-agent {group} ")
    assert all(re.search(rf"^\s+{action}\s", out, re.MULTILINE) for action in actions), out


async def test_tables_wrap_between_words_and_cut_none(
    tmp_path: Path, outbox: Outbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``snoozes list`` at 60 columns: a long SKU widens its column, the long reason wraps under itself."""
    config = tmp_path / "agent.toml"
    config.write_text(
        BASE.replace('driver = "simulator"', 'driver = "http"\n[pos.http]\nurl = "http://127.0.0.1:9/orders"')
        + f'[storage]\npath = "{outbox.path}"\n[intake]\nlisten = "127.0.0.1:9"\n',
        encoding="utf-8",
    )
    sku = "LONG-SKU-NAME-OF-THE-SEAFOOD-PLATTER"
    reason = "sold out at the pass after the second sitting; the supplier delivers again tomorrow morning"
    now = datetime.now(UTC)
    await outbox.write(
        lambda c: snoozes.snooze(c, [sku], until=now + timedelta(hours=3), source="technician", reason=reason, now=now)
    )
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal 60 columns wide
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["snoozes", "list", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SKU") and sku in lines[1]
    start = lines[0].index("REASON")
    shown = [lines[1][start:]] + [line[start:] for line in lines[2:]]
    assert all(not line[:start].strip() for line in lines[2:]), "continuation lines sit under the column"
    assert " ".join(shown) == reason, "every word whole, in order"
    assert len(lines) > 2


def test_table_widens_columns_and_never_breaks_a_long_word() -> None:
    """Columns take their longest cell; a word longer than the room is left whole rather than cut."""
    lines = table(
        [["a-very-long-order-id-0001", "x " * 10 + "https://example.com/a/very/long/url/that/cannot/break"]],
        header=["ORDER", "ERROR"],
        width=40,
    )
    assert lines[0] == "ORDER" + " " * 22 + "ERROR"
    assert lines[1].startswith("a-very-long-order-id-0001  x x")
    assert any(line.strip() == "https://example.com/a/very/long/url/that/cannot/break" for line in lines)


def test_help_text_never_splits_a_hyphenated_word(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns argparse would wrap /etc/venue-agent/agent.toml after "venue-"; the help keeps it whole."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["config", "init", "--help"])
    out = capsys.readouterr().out
    assert "/etc/venue-agent/agent.toml" in out
    assert not [line for line in out.splitlines() if line.rstrip().endswith("-") and line.strip() != "-"], out


def test_console_help_says_what_the_console_is(capsys: pytest.CaptureFixture[str]) -> None:
    """``console --help`` explains who it is for and what it shows before listing its flags."""
    with pytest.raises(SystemExit) as exited:
        main(["console", "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "live view of every venue" in out
    assert "needs a human first" in out
    assert out.index("live view of every venue") < out.index("options:")
