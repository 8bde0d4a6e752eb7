"""``venue-agent fleet-sim``: many light simulated venues on one broker, for tests, benchmarks and demos."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from agent.fleet.sim import Rates
from agent.fleet.sim_mqtt import FleetSim, SimOptions
from agent.fleet.watch import split_broker

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
REPORT_SECONDS = 10.0


def add_commands(sub: Any) -> None:
    """Add ``fleet-sim`` to the sub-command parser ``sub``."""
    sim = sub.add_parser(
        "fleet-sim",
        help="simulate many venues on an MQTT broker (status with Will, health, events, alerts, availability)",
    )
    sim.add_argument("--venues", type=int, default=100, help="how many venues (default 100)")
    sim.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="MQTT broker")
    sim.add_argument("--prefix", default="venues", help="topic prefix (default 'venues')")
    sim.add_argument("--id-format", default="sim-{:04d}", help="venue id from its number (default 'sim-{:04d}')")
    sim.add_argument("--seed", type=int, default=1, help="random seed: the same seed plays the same fleet")
    sim.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS (default: until Ctrl-C)")
    defaults = Rates()
    sim.add_argument("--health-interval", type=float, default=defaults.health_interval, metavar="SECONDS")
    sim.add_argument("--orders-per-hour", type=float, default=defaults.orders_per_hour, help="per venue")
    sim.add_argument("--fail-ratio", type=float, default=defaults.fail_ratio, help="share of orders the POS refuses")
    sim.add_argument("--offline-per-hour", type=float, default=defaults.offline_per_hour, help="per venue")
    sim.add_argument("--paper-out-per-hour", type=float, default=defaults.paper_out_per_hour, help="per printer")
    sim.add_argument("--pos-down-per-hour", type=float, default=defaults.pos_down_per_hour, help="per venue")
    sim.add_argument("--debounce-seconds", type=float, default=defaults.debounce_seconds, help="availability")
    sim.add_argument("--command-secret-file", metavar="FILE", help="check command signatures with this secret")
    sim.add_argument(
        "--password-dir",
        metavar="DIR",
        help="log in as each venue: username = venue id, password in DIR/<venue>.password (mosquitto-fleet-acl)",
    )
    sim.add_argument("--connects-per-second", type=float, default=200.0, help="pace of the first connections")
    sim.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Return the simulation's options; raise ValueError on unusable flags."""
    if args.venues < 1:
        msg = "--venues must be at least 1"
        raise ValueError(msg)
    host, port = split_broker(args.broker, 1883)
    try:
        venues = tuple(args.id_format.format(i) for i in range(1, args.venues + 1))
    except (IndexError, KeyError, ValueError) as exc:
        msg = f"--id-format {args.id_format!r}: {exc}"
        raise ValueError(msg) from None
    secret = _read(args.command_secret_file, "--command-secret-file") if args.command_secret_file else None
    passwords = None
    if args.password_dir:
        passwords = {v: _read(str(Path(args.password_dir) / f"{v}.password"), "--password-dir") for v in venues}
    rates = Rates(
        health_interval=args.health_interval,
        orders_per_hour=args.orders_per_hour,
        fail_ratio=args.fail_ratio,
        offline_per_hour=args.offline_per_hour,
        paper_out_per_hour=args.paper_out_per_hour,
        pos_down_per_hour=args.pos_down_per_hour,
        debounce_seconds=args.debounce_seconds,
    )
    return SimOptions(
        host=host,
        port=port,
        venues=venues,
        prefix=args.prefix.rstrip("/"),
        rates=rates,
        seed=args.seed,
        secret=secret,
        passwords=passwords,
        connects_per_second=args.connects_per_second,
    )


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        msg = f"{flag}: cannot read {path}: {exc.strerror or exc}"
        raise ValueError(msg) from None


def run(args: argparse.Namespace) -> int:
    """Run the simulated fleet until Ctrl-C or ``--duration``; print a progress line every 10 s to stderr."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(_run(options, args.duration))
    except KeyboardInterrupt:
        return EXIT_OK
    except aiomqtt.MqttError as exc:
        print(f"error: MQTT broker {options.host}:{options.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def _run(options: SimOptions, duration: float | None) -> None:
    sim = FleetSim(options)
    runner = asyncio.create_task(sim.run(), name="fleet-sim")
    started = last_at = time.monotonic()
    last = 0
    try:
        while not runner.done():
            left = REPORT_SECONDS if duration is None else max(0.0, duration - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), min(REPORT_SECONDS, left))
            now = time.monotonic()
            total = sum(sim.published.values())
            rate = (total - last) / max(now - last_at, 1e-9)
            print(
                f"fleet-sim: {len(sim.connected)}/{len(sim.venues)} connected, {total} published"
                f" ({rate:.1f}/s), {sim.commands_answered} commands answered",
                file=sys.stderr,
                flush=True,
            )
            last, last_at = total, now
            if duration is not None and now - started >= duration:
                break
    finally:
        sim.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner, 10)
