"""``venue-agent discover`` lists USB printers by their stable /dev/venue-printer/ names and writes TOML using them.

The box is a fake /sys (the usbmisc class, an interface and its USB device, laid out as the kernel does) and a
fake /dev with the links the package's udev rules make (the boot test runs the real udev on the same layout).
"""

from __future__ import annotations

import io
import json
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cli.discover_command import render_toml, render_usb_table, run_discover
from agent.domain.config import settings_from_dict
from drivers.printers.file import FileTransport
from drivers.printers.transports import build_transport
from drivers.printers.usblp import UsbPrinter, list_usb_printers, parse_link_name


class Box:
    """A fake /sys and /dev under ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.sys = tmp_path / "sys"
        self.dev = tmp_path / "dev"
        (self.sys / "class" / "usbmisc").mkdir(parents=True)
        (self.dev / "usb").mkdir(parents=True)

    def plug(self, number: int, port: str, *, serial: str | None, product: str = "TM-T20II") -> None:
        """A printer on USB port ``port`` whose usblp node is lp``number``."""
        device = self.sys / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / port
        interface = device / f"{port}:1.0"
        (interface / "usbmisc" / f"lp{number}").mkdir(parents=True)
        attributes = {"idVendor": "04b8", "idProduct": "0202", "manufacturer": "EPSON", "product": product}
        if serial is not None:
            attributes["serial"] = serial
        for name, value in attributes.items():
            (device / name).write_text(value + "\n")
        link = self.sys / "class" / "usbmisc" / f"lp{number}"
        link.mkdir()
        (link / "device").symlink_to(interface)
        (self.dev / "usb" / f"lp{number}").write_bytes(b"")

    def name(self, number: int, stable: str) -> None:
        """What udev does with the package's rules: /dev/venue-printer/<stable> -> ../usb/lpN."""
        (self.dev / "venue-printer").mkdir(exist_ok=True)
        (self.dev / "venue-printer" / stable).symlink_to(f"../usb/lp{number}")

    def printers(self) -> list[UsbPrinter]:
        return list_usb_printers(self.dev, self.sys)


def test_a_named_printer_is_listed_with_its_stable_path_and_what_it_is(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.plug(0, "1-2", serial="J5CF012345")
    box.name(0, "04b8-0202-J5CF012345")
    assert box.printers() == [
        UsbPrinter(
            path="/dev/venue-printer/04b8-0202-J5CF012345",
            node="/dev/usb/lp0",
            vendor="04b8",
            product="0202",
            serial="J5CF012345",
            model="EPSON TM-T20II",
        )
    ]


def test_replugged_as_lp1_it_keeps_the_same_path(tmp_path: Path) -> None:
    before = Box(tmp_path / "before")
    before.plug(0, "1-2", serial="J5CF012345")
    before.name(0, "04b8-0202-J5CF012345")
    after = Box(tmp_path / "after")
    after.plug(1, "1-3", serial="J5CF012345")
    after.name(1, "04b8-0202-J5CF012345")
    (was,), (now,) = before.printers(), after.printers()
    assert (was.node, now.node) == ("/dev/usb/lp0", "/dev/usb/lp1")
    assert was.path == now.path == "/dev/venue-printer/04b8-0202-J5CF012345"


def test_toml_uses_the_stable_path_and_validates_as_a_printer(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.plug(0, "1-2", serial="J5CF012345")
    box.name(0, "04b8-0202-J5CF012345")
    box.plug(1, "1-3", serial=None, product="Receipt")
    box.name(1, "04b8-0202-port-pci-0000_00_14_0-usb-0_3_1_0")
    text = render_toml([], box.printers())
    parsed = tomllib.loads(text)
    printers = parsed["printers"]
    assert [p["path"] for p in printers] == [
        "/dev/venue-printer/04b8-0202-J5CF012345",
        "/dev/venue-printer/04b8-0202-port-pci-0000_00_14_0-usb-0_3_1_0",
    ]
    assert printers[0]["profile"] == "TM-T20II"
    # usblp has no status channel: said in the config, so doctor and print-test do not wait for an answer.
    assert [p["confirm"] for p in printers] == [False, False]
    assert printers[1]["profile"] == "default"
    assert len({p["name"] for p in printers}) == 2
    assert "/dev/usb/lp0 now; this name stays when it is re-plugged" in text
    settings = settings_from_dict(
        {"venue": {"id": "harbour-kitchen"}, "pos": {"driver": "http", "http": {"url": "http://192.0.2.1/"}}, **parsed}
    )
    transport = build_transport(settings.printers[0])
    # The agent opens the stable name as a device (afresh for each job, never creating it).
    assert isinstance(transport, FileTransport)
    assert transport.device
    assert str(transport.path) == "/dev/venue-printer/04b8-0202-J5CF012345"
    assert not settings.printers[0].writes_text


def test_a_printer_without_a_stable_name_gets_the_fix_not_toml(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.plug(0, "1-2", serial="J5CF012345")
    printers = box.printers()
    assert printers[0].path is None
    table = render_usb_table(printers)
    assert "udevadm trigger --action=add --subsystem-match=usbmisc" in table
    assert "/lib/udev/rules.d/60-venue-agent-printers.rules" in table
    assert render_toml([], printers) == ""


def test_no_usb_printers_and_no_sysfs_at_all(tmp_path: Path) -> None:
    assert list_usb_printers(tmp_path / "no-dev", tmp_path / "no-sys") == []
    assert render_usb_table([]) == "No USB printers (usblp) are plugged into this box."


@given(st.from_regex(r"[0-9a-f]{4}-[0-9a-f]{4}-[A-Za-z0-9_.-]{1,40}", fullmatch=True))
def test_link_names_parse_back(name: str) -> None:
    parsed = parse_link_name(name)
    assert parsed is not None
    rest = name[10:]
    if rest.startswith("port-") and len(rest) > 5:
        assert parsed.port == rest[5:] and parsed.serial is None
    else:
        assert parsed.serial == rest and parsed.port is None
    assert f"{parsed.vendor}-{parsed.product}" == name[:9]


@pytest.mark.parametrize("name", ["", "lp0", "04b8-0202", "04B8-0202-X", "04b8-202-X", "04b8-0202-"])
def test_other_names_are_not_ours(name: str) -> None:
    assert parse_link_name(name) is None


async def test_discover_prints_usb_printers_and_their_toml(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.plug(0, "1-2", serial="J5CF012345")
    box.name(0, "04b8-0202-J5CF012345")
    out, err = io.StringIO(), io.StringIO()
    code = await run_discover(0.2, as_json=False, out=out, err=err, epson_targets=[], usb_printers=box.printers)
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "/dev/venue-printer/04b8-0202-J5CF012345  /dev/usb/lp0" in text
    assert 'path = "/dev/venue-printer/04b8-0202-J5CF012345"' in text
    out = io.StringIO()
    assert await run_discover(0.2, as_json=True, out=out, err=err, epson_targets=[], usb_printers=box.printers) == 0
    listed = json.loads(out.getvalue())
    assert [e for e in listed if e["kind"] == "usb_printer"] == [
        {
            "kind": "usb_printer",
            "path": "/dev/venue-printer/04b8-0202-J5CF012345",
            "node": "/dev/usb/lp0",
            "vendor": "04b8",
            "product": "0202",
            "serial": "J5CF012345",
            "model": "EPSON TM-T20II",
        }
    ]
    assert os.path.realpath(box.dev / "venue-printer" / "04b8-0202-J5CF012345") == str(box.dev / "usb" / "lp0")
