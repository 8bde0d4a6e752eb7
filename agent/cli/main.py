"""The ``venue-agent`` command line (docs/operations.md). Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.cli.client import AgentUnreachable
from agent.domain.config import load_settings
from agent.domain.errors import AgentError, ConfigError, ConfigNotFound, OutboxRefused
from agent.service import logs

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        # A command group without its action (``venue-agent config``) shows that group's help.
        getattr(args, "help_parser", parser).print_help()
        return EXIT_USAGE
    # Commands other than ``run`` and ``demo`` (which set up their own) log warnings only, to stderr:
    # stdout carries their output, which scripts parse.
    logs.configure("warning", "console")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        _config_problems(exc, getattr(args, "config", None))
        return EXIT_USAGE
    except AgentUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code


class _WholeWords(argparse.HelpFormatter):
    """Help text wrapped between words only: a path such as /etc/venue-agent/agent.toml is never split."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose help, and every sub-command's (they are built from its class), keeps words whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _WholeWords)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command."""
    parser = _Parser(
        prog="venue-agent",
        description="Online orders into the POS, or onto paper.",
        epilog=(
            "On an installed box every command but 'run' finds what the service uses: relative *_file secrets from"
            " $CREDENTIALS_DIRECTORY, else the unit's LoadCredential= source, else /etc/venue-agent/credentials/;"
            " the outbox from storage.path, else /var/lib/venue-agent/. Run them with sudo (read-only ones also as"
            " a member of the group venue-agent). First stop for a technician: venue-agent doctor."
        ),
    )
    parser.add_argument("--version", action="version", version=f"venue-agent {__version__}")
    config_parent = _Parser(add_help=False)
    config_parent.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $VENUE_AGENT_CONFIG, /etc/venue-agent/agent.toml, then the user config dir)",
    )
    json_parent = _Parser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", parents=[config_parent], help="run the agent in the foreground")
    run.set_defaults(handler=cmd_run)

    from agent.cli import config_commands, orders, status

    config_commands.add_commands(sub, config_parent, json_parent)
    status.add_commands(sub, config_parent, json_parent)
    orders.add_commands(sub, config_parent, json_parent)
    from agent.cli import printers as cli_printers

    cli_printers.add_commands(sub, config_parent, json_parent)
    from agent.fleet import console, sim_cli

    console.add_commands(sub, config_parent, json_parent)
    sim_cli.add_commands(sub)
    from agent.cli import pos as cli_pos

    cli_pos.add_commands(sub, config_parent, json_parent)
    from agent.cli import outbox as cli_outbox

    cli_outbox.add_commands(sub, config_parent, json_parent)
    from agent.cli import doctor_command as cli_doctor

    cli_doctor.add_commands(sub, config_parent, json_parent)

    sim = sub.add_parser("pos-sim", help="run the POS simulator (for demos, rehearsals and tests)")
    from drivers.pos import simulator_cli

    simulator_cli.add_arguments(sim)
    sim.set_defaults(handler=simulator_cli.run)

    demo = sub.add_parser("demo", help="a guided tour: simulator + agent on loopback, a handful of orders")
    demo.add_argument("--output", default="demo-output", help="where tickets and the summary go")
    demo.add_argument("--fast", action="store_true", help="shorter pauses (for tests)")
    demo.set_defaults(handler=cmd_demo)
    _groups_show_their_help(parser)
    return parser


def _groups_show_their_help(parser: argparse.ArgumentParser) -> None:
    """Make every command that takes an action remember its parser, so that without one its help is shown."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    child.set_defaults(help_parser=child)
                _groups_show_their_help(child)


def _config_problems(exc: ConfigError, path: str | None) -> None:
    # Under systemd (a failed start) these lines reach the journal as errors, not as plain output.
    logs.error_line(f"config check: {len(exc.problems)} problem(s)")
    for problem in exc.problems:
        for line in str(problem).splitlines():
            logs.error_line(f"  {line}")
    if isinstance(exc, ConfigNotFound):
        option = f" --config {shlex.quote(path)}" if path else " [--config PATH]"
        logs.error_line(f"start one from the documented example with: venue-agent config init{option}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    settings, _ = load_settings(args.config)
    logs.configure(settings.logging.level, settings.logging.format)
    from agent.service.daemon import run_agent
    from drivers.pos.errors import PosConfigError

    try:
        return asyncio.run(run_agent(settings))
    except PosConfigError as exc:
        logs.error_line(f"error: {exc}")
        return EXIT_USAGE
    except OutboxRefused as exc:  # restarting cannot fix it: exit 2, which the unit does not restart
        logs.error_line(f"error: cannot start: {exc}")
        return EXIT_USAGE
    except (AgentError, OSError) as exc:
        logs.error_line(f"error: cannot start: {exc}")
        return EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the guided demo."""
    from agent.cli.demo import run_demo

    return run_demo(Path(args.output), fast=args.fast)


if __name__ == "__main__":
    sys.exit(main())
