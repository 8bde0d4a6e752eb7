"""The printer commands as a technician runs them: ``print-test``, ``ticket render``, ``discover``, ``config check``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.cli.main import main
from agent.domain.clock import FakeClock
from agent.domain.models import parse_order
from agent.domain.states import place
from agent.outbox.store import Outbox
from drivers.printers.decode import decode_escpos
from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter

BIN = Path(sys.executable).with_name("venue-agent")


def write_config(tmp_path: Path, printers: str) -> Path:
    """Write a minimal valid config with the given ``[[printers]]`` TOML."""
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"

[storage]
path = "{tmp_path / "outbox.db"}"

[pos]
driver = "http"

[pos.http]
url = "http://127.0.0.1:9/orders"

{printers}
""",
        encoding="utf-8",
    )
    return path


def network_printer(name: str, port: int, **extra: str) -> str:
    """A ``[[printers]]`` table for a fake network printer."""
    more = "".join(f'{key} = "{value}"\n' for key, value in extra.items())
    return f'[[printers]]\nname = "{name}"\nconnection = "network"\nhost = "127.0.0.1"\nport = {port}\n{more}'


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``venue-agent`` as a process (the test's event loop keeps serving the fake printer)."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_print_test_prints_the_test_page_and_reports_status(tmp_path: Path) -> None:
    """The test page reaches the printer in its code page, cut, and the report says PRINTED with the status."""
    async with FakeNetworkPrinter.running() as printer:
        config = write_config(tmp_path, network_printer("kitchen", printer.port, profile="TM-T20II"))
        code, out, err = await run_cli("print-test", "--config", str(config))
    assert code == 0, out + err
    assert "kitchen" in out and "PRINTED" in out and "before ok" in out
    decoded = decode_escpos(printer.jobs[0])
    assert decoded.cuts == 1 and decoded.code_pages == [19]  # CP858 forced, no automatic switching
    assert "Smørrebrød" in decoded.text and "€" in decoded.text and "£" in decoded.text
    assert any(line.double for line in decoded.lines) and any(line.inverse for line in decoded.lines)


async def test_print_test_json_reports_each_printer_and_fails_when_one_cannot_print(tmp_path: Path) -> None:
    """One printer out of paper, one fine: exit 1, the JSON says which and why; --printer picks one."""
    async with FakeNetworkPrinter.running() as good, FakeNetworkPrinter.running("paper_out") as empty:
        config = write_config(tmp_path, network_printer("pass", good.port) + "\n" + network_printer("bar", empty.port))
        code, out, _ = await run_cli("print-test", "--config", str(config), "--json")
        only, only_out, _ = await run_cli("print-test", "--config", str(config), "--printer", "pass")
        unknown, _, unknown_err = await run_cli("print-test", "--config", str(config), "--printer", "nope")
    assert code == 1
    results = {r["printer"]: r for r in json.loads(out)}
    assert results["pass"]["printed"] is True and results["pass"]["after"] == "ok"
    assert results["bar"]["printed"] is False and results["bar"]["before"] == "paper_out"
    assert "paper" in results["bar"]["error"]
    assert empty.jobs == []
    assert only == 0 and "bar" not in only_out
    assert unknown == 2 and "no printer named 'nope'" in unknown_err


async def test_print_test_names_an_unreachable_printer(tmp_path: Path) -> None:
    """A refused connection is reported in words a technician can act on, with exit 1."""
    async with FakeNetworkPrinter.running() as printer:
        printer.refuse()
        config = write_config(tmp_path, network_printer("pass", printer.port))
        code, out, _ = await run_cli("print-test", "--config", str(config))
    assert code == 1
    assert f"connection refused by 127.0.0.1:{printer.port}" in out


def test_ticket_render_sample_as_text_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample renders without a config: text to stdout, and a PNG a person can open."""
    monkeypatch.setenv("VENUE_AGENT_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["ticket", "render", "--sample", "--columns", "32"]) == 0
    text = capsys.readouterr().out
    assert "FALLBACK\n" in text and "NOT IN POS" in text and "A17" in text
    assert all(len(line) <= 32 for line in text.splitlines())
    png = tmp_path / "ticket.png"
    assert main(["ticket", "render", "--sample", "--format", "png", "--output", str(png)]) == 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.height > image.width > 100


async def test_ticket_render_an_order_from_the_outbox(tmp_path: Path) -> None:
    """An order stored by the agent renders as its fallback ticket, in the printer's columns and code page."""
    config = write_config(tmp_path, network_printer("pass", 9100, profile="TM-U220"))
    outbox = Outbox(tmp_path / "outbox.db", clock=FakeClock(), min_free_mb=0)
    await outbox.open()
    payload: dict[str, Any] = make_order("ord_render", customer={"name": "Bjørn Øster", "phone": "+4712345678"})
    order = parse_order(payload, venue_id="harbour-kitchen")
    placement = place(order, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
    await outbox.submit(order, placement, key="harbour-kitchen:ord_render")
    await outbox.close()
    code, out, err = await run_cli("ticket", "render", "ord_render", "--config", str(config))
    assert code == 0, err
    assert "Bjorn Oster" in out  # TM-U220 has only CP437, which lacks ø: transliterated, not '?'
    assert "?" not in out
    missing, _, missing_err = await run_cli("ticket", "render", "ord_nope", "--config", str(config))
    assert missing == 1 and "no order 'ord_nope'" in missing_err


def test_ticket_render_needs_an_order_or_sample(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither an order id nor --sample is a usage error (exit 2) that says what to give."""
    assert main(["ticket", "render"]) == 2
    assert "ORDER_ID or --sample" in capsys.readouterr().err


def test_config_check_names_an_unknown_profile_and_code_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in a profile or code page is caught by config check, naming the key, with exit 2."""
    config = write_config(
        tmp_path,
        network_printer("pass", 9100, profile="TM-T20X")
        + "\n"
        + network_printer("bar", 9101, profile="TM-T20II", code_page="CP9999"),
    )
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "printers[pass].profile" in err and "TM-T20X" in err
    assert "printers[bar].code_page" in err and "CP9999" in err


async def test_discover_json_is_a_list_and_exit_0(tmp_path: Path) -> None:
    """``discover --json`` listens briefly and prints a JSON list (empty or not), exit 0."""
    code, out, err = await run_cli("discover", "--seconds", "0.5", "--json")
    assert code == 0, err
    assert isinstance(json.loads(out), list)
    bad, _, bad_err = await run_cli("discover", "--seconds", "0")
    assert bad == 2 and "--seconds" in bad_err
