"""The udev rules the package ships (packaging/udev/60-venue-agent-printers.rules), read as udev reads them.

Debian 12's systemd 252 has no ``udevadm verify`` (it came in 253), and ``udevadm test`` needs the device in
/sys. So here the file is parsed with udev's own grammar (udev(7): ``KEY[{attr}]OP"value"`` joined by commas,
``\\`` continues a line) and each rule is checked for what the box needs. The real udev runs the rules on a
fake sysfs in the boot test (packaging/boot-test, "udev rules"), where the symlink, group and mode are seen.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parent.parent / "packaging" / "udev" / "60-venue-agent-printers.rules"

# udev(7): the keys this file may use, and the operators each takes.
MATCH = {"==", "!="}
ASSIGN = {"=", "+=", "-=", ":="}
KEYS: dict[str, set[str]] = {
    "ACTION": MATCH,
    "SUBSYSTEM": MATCH,
    "SUBSYSTEMS": MATCH,
    "KERNEL": MATCH,
    "ATTRS": MATCH,
    "ENV": MATCH | {"=", "+="},
    "IMPORT": {"="},
    "GROUP": ASSIGN,
    "MODE": ASSIGN,
    "SYMLINK": MATCH | ASSIGN,
    "GOTO": {"="},
    "LABEL": {"="},
}
TOKEN = re.compile(r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]*)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>[^"]*)"\s*(?:,|$)')


def parse(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    """Return the rules as lists of (key, attr, operator, value); raise ValueError naming a bad line."""
    logical: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            logical.append((start, line))
    if pending:
        raise ValueError(f"line {start}: the file ends in a continuation")
    rules = []
    for number, line in logical:
        tokens = []
        position = 0
        while position < len(line):
            match = TOKEN.match(line, position)
            if match is None:
                raise ValueError(f"line {number}: cannot parse {line[position:]!r}")
            key, op = match["key"], match["op"]
            if key not in KEYS or op not in KEYS[key]:
                raise ValueError(f"line {number}: {key}{op} is not a key/operator this file should use")
            tokens.append((key, match["attr"], op, match["value"]))
            position = match.end()
        rules.append(tokens)
    return rules


@pytest.fixture(scope="module")
def rules() -> list[list[tuple[str, str | None, str, str]]]:
    return parse(RULES.read_text(encoding="utf-8"))


def test_the_parser_rejects_what_udev_rejects() -> None:
    """No vacuous pass: a missing quote, an unknown key and a bad operator are caught."""
    for broken in ('KERNEL=="lp[0-9]*, GROUP="lp"', 'KERNAL=="lp[0-9]*"', 'GROUP=="lp"', 'MODE="0660" GROUP="lp"'):
        with pytest.raises(ValueError):
            parse(broken)


def test_every_goto_has_its_label(rules: list[list[tuple[str, str | None, str, str]]]) -> None:
    labels = {value for rule in rules for key, _, _, value in rule if key == "LABEL"}
    gotos = {value for rule in rules for key, _, _, value in rule if key == "GOTO"}
    assert gotos and gotos <= labels, f"GOTO without LABEL: {gotos - labels}"


def test_only_usblp_nodes_are_touched(rules: list[list[tuple[str, str | None, str, str]]]) -> None:
    """Every rule before the label applies only to lp nodes of usbmisc (usblp), never on remove."""
    guards = [rule for rule in rules if rule[-1][0] == "GOTO" and len(rule) == 2]
    conditions = {(key, op, value) for rule in guards for key, _, op, value in rule[:1]}
    assert ("ACTION", "==", "remove") in conditions
    assert ("SUBSYSTEM", "!=", "usbmisc|usb") in conditions
    assert ("KERNEL", "!=", "lp[0-9]*") in conditions
    # The guards come first: nothing is assigned before them.
    first_assignment = next(i for i, rule in enumerate(rules) if rule[0][0] in {"GROUP", "MODE", "SYMLINK", "IMPORT"})
    assert all(rules.index(rule) < first_assignment for rule in guards[:3])


def test_group_and_mode_let_the_service_write_and_nobody_else(
    rules: list[list[tuple[str, str | None, str, str]]],
) -> None:
    unit = (RULES.parent.parent.parent / "systemd" / "venue-agent.service").read_text(encoding="utf-8")
    groups = re.search(r"^SupplementaryGroups=(.*)$", unit, re.M)
    assert groups
    assignments = {(key, value) for rule in rules for key, _, op, value in rule if op == "="}
    assert ("GROUP", "lp") in assignments
    assert "lp" in groups.group(1).split()
    assert ("MODE", "0660") in assignments


def test_symlinks_are_named_by_vendor_product_and_serial(rules: list[list[tuple[str, str | None, str, str]]]) -> None:
    """The name follows the printer: usb_id's ID_SERIAL_SHORT (made safe for a file name), else the USB port."""
    links = [value for rule in rules for key, _, op, value in rule if key == "SYMLINK" and op == "+="]
    assert links == [
        "venue-printer/$env{ID_VENDOR_ID}-$env{ID_MODEL_ID}-$env{ID_SERIAL_SHORT}",
        "venue-printer/$env{ID_VENDOR_ID}-$env{ID_MODEL_ID}-port-$env{ID_PATH_TAG}",
    ]
    imports = [value for rule in rules for key, attr, _, value in rule if key == "IMPORT" and attr == "builtin"]
    assert imports == ["usb_id", "path_id"]
    # A raw ATTRS{serial} could hold spaces, which would split SYMLINK into two links: never used.
    assert not [rule for rule in rules for key, attr, _, _ in rule if key == "ATTRS" and attr == "serial"]
