"""``venue-agent pos-sim``: run the POS simulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from drivers.pos.sim_state import Faults, SimulatorState
from drivers.pos.simulator import serve_simulator

DEFAULT_PORT = 8788


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pos-sim`` options to ``parser``."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--hmac-secret-file",
        type=Path,
        help="verify X-Venue-Agent-Signature with the secret in this file (401 when wrong)",
    )
    parser.add_argument(
        "--two-phase", action="store_true", help="accept orders with 202 pending and confirm them later"
    )
    parser.add_argument(
        "--confirm-after-ms",
        type=int,
        default=Faults.confirm_after_ms,
        help=f"two-phase: confirm this long after accepting (default {Faults.confirm_after_ms})",
    )


def run(args: argparse.Namespace) -> int:
    """Serve the simulator until interrupted; 0 on SIGINT/SIGTERM, 1 if it cannot listen, 2 on bad options."""
    secret: bytes | None = None
    if args.hmac_secret_file is not None:
        try:
            secret = Path(args.hmac_secret_file).read_bytes().strip()
        except OSError as exc:
            sys.stderr.write(f"pos-sim: cannot read --hmac-secret-file: {exc.strerror or exc}\n")
            return 2
        if not secret:
            sys.stderr.write(f"pos-sim: --hmac-secret-file {args.hmac_secret_file} is empty\n")
            return 2
    if args.confirm_after_ms < 0:
        sys.stderr.write("pos-sim: --confirm-after-ms must be >= 0\n")
        return 2
    faults = Faults(two_phase=args.two_phase, confirm_after_ms=args.confirm_after_ms)
    state = SimulatorState(hmac_secret=secret, faults=faults)
    try:
        asyncio.run(_serve(args.host, args.port, state))
    except OSError as exc:
        sys.stderr.write(f"pos-sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 1
    return 0


async def _serve(host: str, port: int, state: SimulatorState) -> None:
    ready = asyncio.Event()
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.set)
    try:
        serving = asyncio.create_task(serve_simulator(host, port, state=state, ready=ready, shutdown=shutdown))
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            shown = f"[{host}]" if ":" in host else host
            sys.stdout.write(f"POS simulator listening on http://{shown}:{state.port} (http contract: POST /orders)\n")
            sys.stdout.flush()
        else:
            started.cancel()
        await serving
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
