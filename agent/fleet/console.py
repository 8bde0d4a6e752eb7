"""``venue-agent console``: a fleet view of every venue's MQTT reports (docs/fleet.md), or as Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from agent.domain.config import MqttSettings, find_config, load_settings
from agent.domain.errors import ConfigError
from agent.fleet.model import FILTERS, Fleet
from agent.fleet.screen import as_json, render_screen, render_table
from agent.fleet.watch import Connection, reason, split_broker, watch, watch_live

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class MetricsListenError(Exception):
    """The metrics address cannot be listened on (in use, not local, no permission)."""


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``console`` to the sub-command parser ``sub``."""
    console = sub.add_parser(
        "console",
        parents=[config_parent, json_parent],
        help="fleet view: every venue's status, health and alerts from the MQTT broker",
        description=(
            "The ops team's live view of every venue, for a terminal at the central office, not the venue box. "
            "It subscribes to the broker the venues report to and shows one line per venue, what needs a human "
            "first: offline, not accepting orders, failed orders, paper out, then each open alert with what to do. "
            "With --metrics-listen it also serves the fleet to Prometheus. Reads only; sends no commands."
        ),
    )
    console.add_argument(
        "--broker", metavar="HOST[:PORT]", help="MQTT broker (default: [mqtt] host/port of the config)"
    )
    console.add_argument("--prefix", help="topic prefix (default: [mqtt] topic_prefix, else 'venues')")
    console.add_argument("--username")
    console.add_argument("--password-file", metavar="FILE", help="file holding the password")
    console.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    console.add_argument("--ca-file", metavar="FILE", help="CA bundle for TLS (default: the system's)")
    console.add_argument("--cert-file", metavar="FILE", help="client certificate for TLS (PEM)")
    console.add_argument("--key-file", metavar="FILE", help="private key of --cert-file (default: in the cert file)")
    console.add_argument(
        "--once", type=float, metavar="SECONDS", help="collect for SECONDS, print once and exit (for scripts)"
    )
    console.add_argument(
        "--state",
        metavar="STATE[,STATE]",
        help=f"show only venues in any of these states: {', '.join(FILTERS)}",
    )
    console.add_argument(
        "--venue", metavar="GLOB[,GLOB]", help="show only venues whose id matches one of these patterns (e.g. 'ldn-*')"
    )
    console.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="also serve the fleet as Prometheus metrics on http://HOST:PORT/metrics",
    )
    console.add_argument(
        "--no-screen", action="store_true", help="draw nothing (with --metrics-listen: run as a metrics exporter)"
    )
    console.set_defaults(handler=cmd_console)


def _config_mqtt(explicit: str | None) -> MqttSettings | None:
    """The config's [mqtt] section; None when no config file exists and none was asked for."""
    if not explicit:
        try:
            find_config(None)
        except ConfigError:
            return None
    settings, _ = load_settings(explicit)
    return settings.mqtt


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Combine the flags with the config's [mqtt] section (flags win); raise ValueError on unusable values."""
    mqtt = _config_mqtt(getattr(args, "config", None))
    # Any TLS flag turns TLS on; without one the config decides. The config's port applies when its TLS setting does.
    tls = bool(args.tls or args.ca_file or args.cert_file or args.key_file) or bool(mqtt and mqtt.tls)
    default_port = (mqtt.port if mqtt and mqtt.port and mqtt.tls == tls else None) or (8883 if tls else 1883)
    broker = args.broker or (mqtt.host if mqtt else None)
    if not broker:
        msg = "no broker: pass --broker HOST[:PORT] or set [mqtt] host in the config"
        raise ValueError(msg)
    host, port = split_broker(broker, default_port)
    password: str | None = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"cannot read --password-file {args.password_file!r}: {exc.strerror or exc}"
            raise ValueError(msg) from None
    elif mqtt and mqtt.password:
        password = mqtt.password.get_secret_value()
    ca_file = Path(args.ca_file) if args.ca_file else (mqtt.ca_file if mqtt else None)
    cert_file = Path(args.cert_file) if args.cert_file else (mqtt.cert_file if mqtt else None)
    key_file = Path(args.key_file) if args.key_file else (mqtt.key_file if mqtt else None)
    if key_file is not None and cert_file is None:
        msg = "a client key needs its certificate: pass --cert-file (or set [mqtt] cert_file)"
        raise ValueError(msg)
    return Connection(
        host=host,
        port=port,
        prefix=(args.prefix or (mqtt.topic_prefix if mqtt else "venues")).rstrip("/"),
        username=args.username or (mqtt.username if mqtt else None),
        password=password,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file if tls else None,
        key_file=key_file if tls else None,
    )


def filters_from_args(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the ``--state`` and ``--venue`` filters; raise ValueError on a state that is not one of FILTERS."""
    states = tuple(s.strip() for s in (args.state or "").split(",") if s.strip())
    unknown = [s for s in states if s not in FILTERS]
    if unknown:
        msg = f"unknown --state {', '.join(unknown)}: use {', '.join(FILTERS)}"
        raise ValueError(msg)
    venues = tuple(v.strip() for v in (args.venue or "").split(",") if v.strip())
    return states, venues


def _listen_address(value: str) -> tuple[str, int]:
    """Return ``HOST:PORT`` of --metrics-listen (port 9108 when left out); raise ValueError."""
    try:
        return split_broker(value, 9108)
    except ValueError:
        msg = f"--metrics-listen {value!r}: use HOST:PORT, e.g. 127.0.0.1:9108"
        raise ValueError(msg) from None


def cmd_console(args: argparse.Namespace) -> int:
    """Show the fleet: once (``--once``) or redrawn as it changes until Ctrl-C, reconnecting after the first connect."""
    try:
        conn = connection_from_args(args)
        states, venues = filters_from_args(args)
        listen = _listen_address(args.metrics_listen) if args.metrics_listen else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.once is not None and args.once < 0:
        print("error: --once needs a number of seconds >= 0", file=sys.stderr)
        return EXIT_USAGE
    fleet = Fleet(conn.prefix)
    try:
        if args.once is not None:
            asyncio.run(watch(conn, fleet, seconds=args.once))
            rows = fleet.rows(states, venues)
            print(json.dumps(as_json(rows), indent=2) if args.json else render_table(rows, time.time()))
        else:
            draw = None if args.no_screen else _redraw(args.json, states, venues)
            asyncio.run(_live(conn, fleet, draw, listen))
    except MetricsListenError as exc:
        print(f"error: --metrics-listen {args.metrics_listen}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (aiomqtt.MqttError, TimeoutError, ssl.SSLError, OSError) as exc:
        print(f"error: MQTT broker {conn.host}:{conn.port}: {reason(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


async def _live(
    conn: Connection, fleet: Fleet, draw: Callable[[Fleet], None] | None, listen: tuple[str, int] | None
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if listen is not None:
            from agent.fleet.metrics import serve_metrics

            try:
                server = await serve_metrics(fleet, *listen)
            except OSError as exc:
                raise MetricsListenError(exc.strerror or str(exc)) from None
            stack.push_async_callback(_close_server, server)
            _notice(f"metrics on http://{listen[0]}:{listen[1]}/metrics")
        await watch_live(conn, fleet, on_tick=draw, notice=_notice)


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def _redraw(as_json_output: bool, states: tuple[str, ...], venues: tuple[str, ...]) -> Callable[[Fleet], None]:
    tty = sys.stdout.isatty()

    def draw(fleet: Fleet) -> None:
        if as_json_output:
            text = json.dumps(as_json(fleet.rows(states, venues)))
        else:
            size = shutil.get_terminal_size() if tty else None
            text = render_screen(
                fleet,
                time.time(),
                states=states,
                venues=venues,
                height=size.lines if size else 0,
                width=size.columns if size else 0,
            )
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J")
        print(text, flush=True)

    return draw


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
