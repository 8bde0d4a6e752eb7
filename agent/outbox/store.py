"""The durable outbox: SQLite in WAL mode with ``synchronous=FULL``, written by group commit.

Every write is a function from the outbox's write modules (``events``, ``transitions``, ``intake``,
``print_jobs``, ``retention``) run inside one transaction; writes that arrive together share that
transaction and its fsync, and each caller is answered only after the commit that holds its own write.
Reads (``queries``) go through a second connection and never wait for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from agent.domain.clock import Clock
from agent.domain.errors import OutboxRefused, StorageError, StorageFull
from agent.domain.models import Order
from agent.domain.states import ErrorClass, Placement, State
from agent.outbox import commit, events, identity, intake, queries, retention, transitions
from agent.outbox.records import EventRecord, OrderRecord, PrintJob
from agent.outbox.schema import migrate

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

log = structlog.get_logger("venue_agent.outbox")

EVENTS_CAP = 100_000
MAX_BATCH = 256
PURGE_SLICE = 200  # orders per purge commit: about 10 ms of deletes on a Pi
CHECKPOINT_AFTER_SECONDS = 1.0  # how long after a write the checkpointer copies the WAL into the database


def _disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class Outbox:
    """Orders, their audit log, alerts, print jobs and a key/value table in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        min_free_mb: int = 50,
        disk_free: Callable[[Path], int] = _disk_free_bytes,
        checkpoint_after_seconds: float = CHECKPOINT_AFTER_SECONDS,
    ) -> None:
        self.path = path
        self.clock = clock
        self.min_free_mb = min_free_mb
        self._disk_free = disk_free
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[commit.Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpoint_due = asyncio.Event()
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpoint_after = checkpoint_after_seconds
        self.checkpoints = 0
        self._disk_checked_at = -1.0
        self._disk_ok = True
        self.last_commit_ms = 0.0
        self.commits = 0
        self.outbox_id = ""
        self.integrity = identity.IntegrityResult("unknown", None, None)

    # ---- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating and migrating) the database and start the group-commit writer.

        Raise OutboxRefused when the file is missing, empty or another box's while its marker says an outbox
        existed, or when it fails ``PRAGMA quick_check``; the files are then left exactly as they were.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marker_file = identity.marker_path(self.path)
        try:
            marker = identity.read_marker(marker_file)
        except ValueError as exc:
            hint = f" If the outbox at {self.path} is the right one, delete the marker and start again."
            raise _refused(identity.Refusal("marker", f"{exc}.{hint}")) from exc
        refusal = identity.check_files(marker, identity.files_found(self.path), self.path)
        if refusal is not None:
            raise _refused(refusal)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            self._writer.row_factory = sqlite3.Row
            await commit.run_in_thread(self._writer, commit.configure_writer)
            found = await commit.run_in_thread(self._writer, identity.database_found)
            refusal = identity.check_database(marker, found, self.path)
            if refusal is None:
                self.integrity = identity.integrity_result(
                    await commit.run_in_thread(self._writer, identity.integrity_check), self.clock.now()
                )
                if not self.integrity.ok:
                    refusal = identity.Refusal(
                        "integrity", identity.damaged_text(self.path, f"PRAGMA quick_check: {self.integrity.detail}")
                    )
            if refusal is not None:
                await self.close()
                raise _refused(refusal)
            version = await commit.run_in_thread(self._writer, migrate)
            self.outbox_id = found.outbox_id or (marker.outbox_id if marker else identity.new_outbox_id())
            if found.outbox_id is None:
                if marker is not None:
                    log.warning("outbox_id_adopted", path=str(self.path), outbox_id=self.outbox_id)
                now = self.clock.now()
                outbox_id = self.outbox_id
                await commit.run_in_thread(
                    self._writer, lambda c: events.kv_put(c, identity.OUTBOX_ID_KEY, outbox_id, now=now)
                )
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await commit.run_in_thread(self._reader, commit.configure_reader)
            self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
            await commit.run_in_thread(self._checkpointer, commit.configure_checkpointer)
        except sqlite3.Error as exc:
            await self.close()
            msg = f"cannot open the outbox at {self.path}: {exc}"
            if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                raise _refused(identity.Refusal("corrupt", identity.damaged_text(self.path, str(exc)))) from exc
            raise StorageError(msg) from exc
        if marker is None or (marker.outbox_id, marker.schema_version) != (self.outbox_id, version):
            created = marker.created_at if marker else self.clock.now().isoformat()
            identity.write_marker(marker_file, identity.Marker(self.outbox_id, version, created))
            log.info("outbox_marker_written", path=str(marker_file), outbox_id=self.outbox_id, schema=version)
        self._task = asyncio.create_task(self._write_loop(), name="venue-agent outbox writer")
        self._checkpoint_task = asyncio.create_task(self._checkpoint_loop(), name="venue-agent outbox checkpointer")

    async def check_integrity(self) -> identity.IntegrityResult:
        """Run ``PRAGMA quick_check`` on a connection (and thread) of its own; keep and return the result.

        Neither the writer nor the reader waits for it. It reads the whole file: about a second per 100 MB.
        """
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await commit.run_in_thread(conn, commit.configure_reader)
            self.integrity = identity.integrity_result(
                await commit.run_in_thread(conn, identity.integrity_check), self.clock.now()
            )
        except sqlite3.Error as exc:
            self.integrity = identity.IntegrityResult("failed", str(exc), self.clock.now())
        finally:
            await conn.close()
        return self.integrity

    async def close(self) -> None:
        """Finish queued writes, stop the writer and close both connections."""
        if self._task is not None:
            # A no-op queued last returns only after every write queued before it has committed.
            with contextlib.suppress(StorageError):
                await self.write(lambda _c: None)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._checkpoint_task is not None:
            # A checkpoint under way finishes on its thread; closing the last connection checkpoints the rest.
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
            self._checkpoint_task = None
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._checkpointer = self._reader = self._writer = None

    @property
    def is_open(self) -> bool:
        """Return whether the outbox can take writes (the writer is running)."""
        return self._task is not None and not self._task.done()

    # ---- the group-commit writer ------------------------------------------------------------

    async def write(self, op: Op[T]) -> T:
        """Run ``op`` in the next group commit; return its result once that commit is on disk."""
        if not self.is_open:
            msg = "the outbox is not open"
            raise StorageError(msg)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(commit.Pending(op, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        assert self._writer is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                started = time.perf_counter()
                try:
                    outcomes = await commit.run_in_thread(
                        self._writer, functools.partial(commit.run_batch, batch=batch)
                    )
                except sqlite3.Error as exc:
                    error = commit.storage_error(exc)
                    log.error("outbox_write_failed", error=str(exc), batch=len(batch))
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                self.last_commit_ms = (time.perf_counter() - started) * 1000
                self.commits += 1
                self._schedule_checkpoint()
                for item, (ok, value) in zip(batch, outcomes, strict=True):
                    if item.future.done():
                        continue
                    if ok:
                        item.future.set_result(value)
                    else:
                        item.future.set_exception(value)
                # One turn of the loop first: the callers just answered queue their next writes (the dispatcher's
                # next claim, a submitter's next order) into the coming commit instead of the one after it.
                await asyncio.sleep(0)

    def _schedule_checkpoint(self) -> None:
        if self._checkpoint_timer is None and self._checkpointer is not None:
            self._checkpoint_timer = asyncio.get_running_loop().call_later(
                self._checkpoint_after, self._checkpoint_due.set
            )

    async def _checkpoint_loop(self) -> None:
        assert self._checkpointer is not None
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            self._checkpoint_timer = None  # writes from now on schedule the next one
            try:
                await commit.run_in_thread(self._checkpointer, commit.checkpoint)
            except sqlite3.Error as exc:  # the writer's own autocheckpoint remains the backstop
                log.warning("outbox_checkpoint_failed", error=str(exc))
            else:
                self.checkpoints += 1

    # ---- intake -----------------------------------------------------------------------------

    def check_space(self) -> None:
        """Raise StorageFull when free space is below ``min_free_mb`` (checked at most once a second)."""
        now = time.monotonic()
        if now - self._disk_checked_at >= 1.0:
            try:
                free = self._disk_free(self.path.parent)
            except OSError:
                free = 0
            self._disk_ok = free >= self.min_free_mb * 1024 * 1024
            self._disk_checked_at = now
        if not self._disk_ok:
            msg = f"less than {self.min_free_mb} MB free on the disk holding {self.path}"
            raise StorageFull(msg)

    async def submit(self, order: Order, placement: Placement, *, key: str) -> intake.SubmitResult:
        """Store a new order (or recognise a duplicate) durably; raise OrderConflict or StorageError."""
        self.check_space()
        now = self.clock.now()
        # Hashed and serialised here: the writer's thread is the one every commit waits for.
        digest, body = order.content_hash(), order.model_dump_json()
        return await self.write(
            lambda c: intake.submit(c, order, placement, key=key, now=now, digest=digest, body=body)
        )

    async def replace(self, order: Order, placement: Placement, *, base_key: str) -> tuple[OrderRecord, bool]:
        """Replace an order the POS does not have; return it and whether a reprint was requested."""
        self.check_space()
        now = self.clock.now()
        return await self.write(lambda c: intake.replace(c, order, placement, base_key=base_key, now=now))

    async def transition(
        self,
        order_id: str,
        to: State,
        *,
        event: str,
        expect: tuple[State, ...] | None = None,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> OrderRecord:
        """Move one order to another state (with its event) in the next group commit."""
        now = self.clock.now()
        return await self.write(
            lambda c: transitions.transition(
                c, order_id, to, now=now, event=event, expect=expect, detail=detail, **fields
            )
        )

    async def alert(self, alert: str, severity: str, payload: dict[str, Any], *, order_id: str | None = None) -> None:
        """Record an alert durably."""
        now = self.clock.now()
        await self.write(lambda c: events.add_alert(c, now, alert, severity, payload, order_id=order_id))

    async def event(self, kind: str, detail: dict[str, Any] | None = None, *, order_id: str | None = None) -> None:
        """Record a component event durably."""
        now = self.clock.now()
        await self.write(lambda c: events.add_event(c, now, kind, order_id=order_id, detail=detail))

    async def kv_put(self, key: str, value: str) -> None:
        """Store a value durably under a key."""
        now = self.clock.now()
        await self.write(lambda c: events.kv_put(c, key, value, now=now))

    # ---- reads ------------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only function on the reader connection."""
        if self._reader is None:
            msg = "the outbox is not open"
            raise StorageError(msg)
        return await commit.run_in_thread(self._reader, fn)

    async def get(self, order_id: str) -> OrderRecord | None:
        """Return one order, or None."""
        return await self.read(lambda c: transitions.fetch(c, order_id))

    async def list_orders(self, *, state: State | None = None, limit: int = 50) -> list[OrderRecord]:
        """Return orders newest first, optionally in one state."""
        return await self.read(functools.partial(queries.list_orders, state=state, limit=limit))

    async def orders_in(self, states: tuple[State, ...], *, limit: int = 10_000) -> list[OrderRecord]:
        """Return orders in any of ``states``, oldest due first."""
        return await self.read(functools.partial(queries.orders_in, states=states, limit=limit))

    async def history(self, order_id: str) -> list[EventRecord]:
        """Return an order's audit events, oldest first."""
        return await self.read(functools.partial(queries.history, order_id=order_id))

    async def events_since(self, seq: int, *, limit: int = 1000) -> list[EventRecord]:
        """Return audit events after ``seq``, oldest first."""
        return await self.read(functools.partial(queries.events_since, seq=seq, limit=limit))

    async def alerts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest alerts, newest first."""
        return await self.read(functools.partial(queries.alerts, limit=limit))

    async def print_jobs(self, order_id: str) -> list[PrintJob]:
        """Return an order's print jobs, oldest first."""
        return await self.read(functools.partial(queries.print_jobs, order_id=order_id))

    async def due_print_jobs(self, now: datetime, *, limit: int = 20) -> list[PrintJob]:
        """Return pending print jobs whose time has come, oldest first."""
        return await self.read(functools.partial(queries.due_print_jobs, now=now, limit=limit))

    async def counts(self) -> dict[str, int]:
        """Return how many orders are in each state (every state present, zero included)."""
        return await self.read(queries.counts)

    async def oldest_pending(self) -> datetime | None:
        """Return the due time of the oldest order that is due and not yet in the POS."""
        return await self.read(queries.oldest_pending)

    async def last_injected(self) -> datetime | None:
        """Return when the most recent order reached the POS."""
        return await self.read(queries.last_injected)

    async def next_deadline(self) -> datetime | None:
        """Return the earliest time a scheduled order or a retry becomes due."""
        return await self.read(queries.next_deadline)

    async def health_figures(self) -> tuple[dict[str, int], datetime | None, datetime | None]:
        """Return (counts per state, oldest pending due time, last injection) in one read."""
        return await self.read(queries.health_figures)

    async def idle_until(self) -> tuple[bool, datetime | None]:
        """Return (an order is on its way to the POS or waits for a fallback, earliest scheduled/retry due time)."""
        return await self.read(queries.idle_until)

    async def next_print_due(self) -> datetime | None:
        """Return when the earliest pending print job is due, or None."""
        return await self.read(queries.next_print_due)

    async def kv_get(self, key: str) -> str | None:
        """Return the value stored under a key, or None."""
        return await self.read(functools.partial(queries.kv_get, key=key))

    def db_size_bytes(self) -> int:
        """Return the size of the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def disk_free_bytes(self) -> int:
        """Return the free space on the disk holding the outbox."""
        try:
            return self._disk_free(self.path.parent)
        except OSError:
            return 0

    # ---- maintenance ------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Requeue orders left in ``sending`` by a crash (same idempotency key); return their ids."""
        now = self.clock.now()
        recovered = await self.write(lambda c: transitions.recover_in_doubt(c, now=now))
        if recovered:
            log.warning("orders_in_doubt_requeued", count=len(recovered), order_ids=recovered[:20])
        return recovered

    async def purge(self, retention_days: int, *, events_cap: int = EVENTS_CAP, forwarding: bool = False) -> int:
        """Delete finished orders older than the retention period, and component events past the cap.

        ``forwarding``: events are published over MQTT, so pruning unpublished ones loses them for the ops console.
        Return how many orders were deleted.
        """
        before = self.clock.now() - timedelta(days=retention_days)
        purged = 0
        while True:
            # A day of a busy venue is thousands of orders: in slices, so intake's commits go in between.
            done = await self.write(lambda c: retention.purge(c, before=before, limit=PURGE_SLICE))
            purged += done
            if done < PURGE_SLICE:
                break
        if purged:
            log.info("orders_purged", count=purged, retention_days=retention_days)
        pruned, unpublished = await self.write(lambda c: retention.prune_component_events(c, cap=events_cap))
        if unpublished and forwarding:
            # Only after a very long broker outage: the ops console misses these, the local audit log keeps the rest.
            log.warning("events_pruned_unpublished", count=unpublished, cap=events_cap)
        elif pruned:
            log.info("events_pruned", count=pruned, cap=events_cap)
        return purged


def _refused(refusal: identity.Refusal) -> OutboxRefused:
    log.error("outbox_refused", reason=refusal.reason, message=refusal.message)
    return OutboxRefused(refusal.reason, refusal.message)


__all__ = ["ErrorClass", "Outbox", "State"]
