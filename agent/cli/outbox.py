"""``venue-agent outbox init [--force]``: create a new empty outbox (and its marker) on purpose.

The only way past a refused outbox (missing, empty, another box's, damaged) short of restoring a backup. The old
files are moved aside (renamed with a ``.replaced-<time>`` suffix), never deleted: a truncated file's -wal may
still hold the last orders for someone to recover.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli import operator
from agent.cli.client import AgentClient, AgentUnreachable
from agent.domain.clock import SystemClock
from agent.outbox import identity
from agent.outbox.store import Outbox

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``outbox init`` to the sub-command parser ``sub``."""
    outbox = sub.add_parser("outbox", help="the outbox file")
    outbox_sub = outbox.add_subparsers(metavar="ACTION")
    init = outbox_sub.add_parser(
        "init", parents=[config_parent, json_parent], help="create a new empty outbox (--force to replace one)"
    )
    init.add_argument(
        "--force", action="store_true", help="replace the existing outbox: the orders it holds are LOST to the agent"
    )
    init.set_defaults(handler=cmd_outbox_init)


def existing_files(db: Path) -> list[Path]:
    """Return the outbox's files that exist: the database, its -wal and -shm, and the marker."""
    candidates = (db, Path(f"{db}-wal"), Path(f"{db}-shm"), identity.marker_path(db))
    return [p for p in candidates if p.exists()]


def cmd_outbox_init(args: argparse.Namespace) -> int:
    """Create a fresh outbox and marker; with an existing one only under --force, moving its files aside."""
    ctx = operator.load(args.config)
    settings = ctx.settings
    db = settings.storage.path
    ctx.announce_outbox()
    client = AgentClient(settings, timeout=2)
    try:
        client.call("GET", "/v1/health")
    except AgentUnreachable:
        pass
    else:
        print(
            f"error: an agent is running at {client.base}: stop it first (systemctl stop venue-agent)", file=sys.stderr
        )
        return EXIT_FAILURE
    finally:
        client.close()
    found = existing_files(db)
    if found and not args.force:
        names = ", ".join(str(p) for p in found)
        print(
            f"error: an outbox exists ({names}). `venue-agent outbox init --force` replaces it with an empty one:"
            " the orders it holds are then lost to the agent. Restore a backup instead if there is one.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved: dict[str, str] = {}
    for path in found:
        if path.name.endswith("-shm"):
            path.unlink()  # only an index of the -wal, rebuilt by SQLite; stale, it must not meet a new database
            continue
        target = path.with_name(f"{path.name}.replaced-{stamp}")
        path.rename(target)
        moved[str(path)] = str(target)
    if found:
        identity.fsync_dir(db.parent)
    outbox_id = asyncio.run(_create(db))
    if os.geteuid() == 0:
        _give_to_directory_owner(db)
    if args.json:
        print(json.dumps({"ok": True, "path": str(db), "outbox_id": outbox_id, "moved": moved}, indent=2))
        return EXIT_OK
    print(f"new empty outbox {outbox_id} at {db}")
    for before, after in moved.items():
        print(f"  moved {before} -> {after} (delete it once nothing needs recovering from it)")
    return EXIT_OK


async def _create(db: Path) -> str:
    outbox = Outbox(db, clock=SystemClock(), min_free_mb=0)
    await outbox.open()
    await outbox.close()
    return outbox.outbox_id


def _give_to_directory_owner(db: Path) -> None:
    # Run as root, the new files would be root's and the agent's user could not write them.
    owner = db.parent.stat()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), identity.marker_path(db)):
        if path.exists():
            os.chown(path, owner.st_uid, owner.st_gid)
