"""The fleet as the console sees it, in Prometheus exposition format (``console --metrics-listen``).

Every value is read at scrape time from the console's ``Fleet``, in the event loop that folds the messages, so
a scrape never sees a venue half updated; only the text formatting (the slow part: about 0.3 s for 1,000
venues) runs in a thread, on that snapshot, so the console keeps folding and drawing meanwhile.

Per-venue series carry a ``venue`` label. The POS and printer states
are one series each, for the current state, with value 1 (not one per possible state: at 1,000 venues with two
printers that would be 10,000 series more); a series that changes state ends, and Prometheus marks it stale.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from agent.fleet.model import NEEDS, Fleet

log = structlog.get_logger("venue_agent.fleet")

OUTBOX_STATES = ("held", "scheduled", "queued", "retrying", "awaiting_pos", "failed")
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 8192


class FleetCollector(Collector):
    """Collects the fleet's metrics from ``fleet`` at each scrape."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterable[Metric]:
        """Return every metric family of the fleet, in a stable order."""
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        fleet = self.fleet
        rows = sorted(fleet.venues.values(), key=lambda r: r.venue)
        yield GaugeMetricFamily(
            "venue_agent_console_connected", "1 while the console is subscribed to the broker", value=fleet.connected
        )
        yield CounterMetricFamily(
            "venue_agent_console_messages", "MQTT messages the console has folded", value=fleet.messages
        )
        counts = fleet.counts()
        venues = GaugeMetricFamily(
            "venue_agent_fleet_venues", "Venues the console knows, by condition", labels=["need"]
        )
        venues.add_metric(["all"], counts["venues"])
        venues.add_metric(["online"], counts["online"])
        for need in NEEDS:
            venues.add_metric([need], counts[need])
        yield venues

        online = _gauge("online", "1 while the venue's retained status is online")
        accepting = _gauge("accepting", "1 while the venue can take orders (P/availability); absent before it says")
        pending = _gauge("pending_orders", "Orders neither in the POS nor on paper yet (held..awaiting_pos)")
        outbox = _gauge("outbox_orders", "Orders in the venue's outbox by state (from P/health)", "state")
        oldest = _gauge("oldest_undelivered_order_age_seconds", "Age of the oldest order not yet in the POS")
        injected = CounterMetricFamily(
            "venue_agent_venue_orders_injected", "Orders seen injected into the POS (P/events)", labels=["venue"]
        )
        failed = CounterMetricFamily(
            "venue_agent_venue_orders_failed", "Orders seen failing and needing a human (P/events)", labels=["venue"]
        )
        pos = _gauge("pos_state", "The POS link's current state, value 1 (ok, degraded, down, auth_required)", "state")
        printers = _gauge(
            "printer_state",
            "Each printer's current state, value 1 (ok, paper_low, paper_out, offline, error)",
            "printer",
            "state",
        )
        alerts = _gauge("open_alerts", "Alerts the console holds open for the venue")
        seen = _gauge("last_seen_timestamp_seconds", "When the console last heard from the venue (Unix time)")
        disk = _gauge("disk_free_megabytes", "Free space where the venue's outbox lives (P/health)")
        for row in rows:
            v = row.venue
            online.add_metric([v], 1.0 if row.state == "online" else 0.0)
            if row.accepting is not None:
                accepting.add_metric([v], 1.0 if row.accepting else 0.0)
            if row.health_ts is not None:
                pending.add_metric([v], row.pending)
                for state in OUTBOX_STATES:
                    outbox.add_metric([v, state], row.outbox.get(state, 0))
                oldest.add_metric([v], row.oldest_pending_age_s or 0.0)
                if row.pos.get("state"):
                    pos.add_metric([v, str(row.pos["state"])], 1.0)
                for name, printer_state in sorted(row.printers.items()):
                    printers.add_metric([v, name, printer_state], 1.0)
                if row.disk_free_mb is not None:
                    disk.add_metric([v], row.disk_free_mb)
            injected.add_metric([v], row.injected_total)
            failed.add_metric([v], row.failed_total)
            alerts.add_metric([v], row.open_alerts)
            if row.last_seen is not None:
                seen.add_metric([v], row.last_seen)
        yield from (online, accepting, pending, outbox, oldest, injected, failed, pos, printers, alerts, seen, disk)


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"venue_agent_venue_{name}", documentation, labels=["venue", *labels])


class _Snapshot(Collector):
    """Families already collected, for formatting away from the event loop."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        """Return the snapshot."""
        return self.families


def exposition(fleet: Fleet) -> bytes:
    """Return the fleet's metrics in the Prometheus text format (collected and formatted in the caller's thread)."""
    return _format(list(FleetCollector(fleet).collect()))


def _format(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


async def serve_metrics(fleet: Fleet, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``host:port`` from the running event loop; return the listening server."""
    collector = FleetCollector(fleet)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            if method not in ("GET", "HEAD"):
                _respond(writer, 405, b"only GET\n", "text/plain; charset=utf-8")
            elif path.split("?")[0] != "/metrics":
                _respond(writer, 404, b"see /metrics\n", "text/plain; charset=utf-8")
            else:
                body = await asyncio.to_thread(_format, list(collector.collect()))
                _respond(writer, 200, b"" if method == "HEAD" else body, CONTENT_TYPE_LATEST, length=len(body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # a scraper that hung up or sent garbage gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)
    log.info("metrics_listening", host=host, port=port)
    return server


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        msg = "not an HTTP request"
        raise ValueError(msg)
    return parts[0], parts[1]


def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, *, length: int = -1) -> None:
    reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}
    head = (
        f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length < 0 else length}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
