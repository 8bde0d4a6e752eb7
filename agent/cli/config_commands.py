"""``venue-agent config check|show|init``: validate, print and start the technician's config file ."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from agent.cli import operator
from agent.cli.tomlout import dumps
from agent.domain.config import redacted, search_paths
from agent.domain.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# In a source tree the example is config/example.toml; an installed wheel carries it as agent/example.toml
# (pyproject.toml, force-include).
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``config check``, ``config show`` and ``config init`` to the sub-command parser ``sub``."""
    config = sub.add_parser("config", help="check, show or start the configuration")
    config_sub = config.add_subparsers(metavar="ACTION")
    check = config_sub.add_parser(
        "check",
        parents=[config_parent, json_parent],
        help="report every problem, and where each secret and the outbox are found",
    )
    check.set_defaults(handler=cmd_config_check)
    show = config_sub.add_parser("show", parents=[config_parent, json_parent], help="effective settings, redacted")
    show.set_defaults(handler=cmd_config_show)
    init = config_sub.add_parser(
        "init",
        parents=[config_parent],
        help="write the example config (every key, documented) to start from",
        description="Write the example config, every key with its default and what it does, to --config PATH"
        " (default: $VENUE_AGENT_CONFIG, else /etc/venue-agent/agent.toml). Then set [venue] and [pos] and run"
        " 'venue-agent config check'.",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=cmd_config_init)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config as the service would use it; print a summary (0) or every problem (2)."""
    from agent.cli import config_check

    report = config_check.check(args.config)
    if args.json:
        print(json.dumps(config_check.as_json(report), indent=2))
        return EXIT_OK if report.ok else EXIT_USAGE
    if not report.ok:
        raise report.not_found or ConfigError(report.all_problems)
    print("\n".join(config_check.summary(report)))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective settings with every secret redacted."""
    data = redacted(operator.load(args.config).settings)
    print(json.dumps(data, indent=2) if args.json else dumps(data), end="" if not args.json else "\n")
    return EXIT_OK


def example_config() -> str:
    """Return the text of the example config shipped with the agent."""
    if EXAMPLE_CONFIG.is_file():
        return EXAMPLE_CONFIG.read_text(encoding="utf-8")
    return resources.files("agent").joinpath("example.toml").read_text(encoding="utf-8")


def cmd_config_init(args: argparse.Namespace) -> int:
    """Write the example config where the commands look first; refuse to replace a file without --force (2)."""
    target = search_paths(args.config)[0]
    if target.exists() and not args.force:
        print(f"error: {target} already exists; pass --force to overwrite it with the example", file=sys.stderr)
        return EXIT_USAGE
    if target.exists() and not target.is_file():
        print(f"error: {target} is not a regular file", file=sys.stderr)
        return EXIT_USAGE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example_config(), encoding="utf-8")
    except OSError as exc:
        hint = "; run it with sudo, or pass --config PATH" if isinstance(exc, PermissionError) else ""
        print(f"error: cannot write {target}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    option = f" --config {shlex.quote(str(target))}" if args.config else ""
    print(f"wrote {target}: the example config, every key with its default and what it does")
    print(f"next: set [venue] id and [pos] for this venue, then run: venue-agent config check{option}")
    return EXIT_OK
