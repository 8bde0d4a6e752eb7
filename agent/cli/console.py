"""``venue-agent console``: a fleet view of every venue's MQTT status, health and alerts (SPEC §8)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.domain.config import MqttSettings, find_config, load_settings
from agent.domain.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
KINDS = ("status", "health", "alerts")
LATEST_ALERTS = 3
REDRAW_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 10.0
RECONNECT_INITIAL_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
PENDING_STATES = ("held", "scheduled", "queued", "retrying", "awaiting_pos")


@dataclass
class VenueRow:
    """What the console knows about one venue, folded from its MQTT messages."""

    venue: str
    state: str = "unknown"
    since: str | None = None
    version: str | None = None
    boot_id: str | None = None
    seq: int | None = None
    last_seen: float | None = None
    outbox: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None
    pos: dict[str, Any] = field(default_factory=dict)
    printers_not_ok: list[str] = field(default_factory=list)
    disk_free_mb: float | None = None
    health_ts: str | None = None
    open_alerts: int = 0
    # (epoch seconds, alert name), newest last, at most LATEST_ALERTS long.
    latest_alerts: list[tuple[float, str]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Orders not yet in the POS or on paper (every non-final outbox state but failed)."""
        return sum(int(self.outbox.get(k, 0)) for k in PENDING_STATES)


class Fleet:
    """Per-venue rows folded from ``{prefix}/+/status|health|alerts|events``; pure, no I/O."""

    def __init__(self, prefix: str = "venues") -> None:
        self.prefix = prefix.rstrip("/")
        self.venues: dict[str, VenueRow] = {}
        self.ignored = 0

    def apply(self, topic: str, payload: bytes | bytearray | str, *, now: float) -> None:
        """Fold one message received at ``now`` (epoch s); unusable topics or payloads are counted, never raised."""
        parsed = self._parse_topic(topic)
        message = _decode(payload)
        if parsed is None or message is None:
            self.ignored += 1
            return
        venue, kind = parsed
        row = self.venues.setdefault(venue, VenueRow(venue))
        row.last_seen = now if row.last_seen is None else max(row.last_seen, now)
        if kind == "status":
            self._status(row, message)
        elif kind == "health":
            self._health(row, message)
        elif kind == "alerts":
            self._alert(row, message, now)

    def _parse_topic(self, topic: str) -> tuple[str, str] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or not parts[0] or parts[1] not in (*KINDS, "events"):
            return None
        return parts[0], parts[1]

    @staticmethod
    def _status(row: VenueRow, message: dict[str, Any]) -> None:
        state = message.get("state")
        if state not in ("online", "offline"):
            return
        boot_id = _str_or_none(message.get("boot_id"))
        seq = _int_or_none(message.get("seq"))
        same_boot = boot_id is not None and boot_id == row.boot_id
        if same_boot and seq is not None and row.seq is not None and seq < row.seq:
            return  # an older connection of this boot (a late Will or a stale birth)
        if state == "offline" and row.state == "online" and boot_id is not None and not same_boot:
            # A Will from an earlier boot delivered after the new birth (edge-building-blocks §2.1).
            return
        if state == "online" and (boot_id != row.boot_id or seq != row.seq or row.state != "online"):
            row.open_alerts = 0
            row.latest_alerts = []
        row.state = state
        row.since = _str_or_none(message.get("since"))
        row.version = _str_or_none(message.get("version")) or row.version
        row.boot_id = boot_id if boot_id is not None else row.boot_id
        row.seq = seq

    @staticmethod
    def _health(row: VenueRow, message: dict[str, Any]) -> None:
        outbox = message.get("outbox")
        if isinstance(outbox, dict):
            row.outbox = {str(k): v for k, v in outbox.items() if isinstance(v, int)}
        age = message.get("oldest_pending_age_s")
        row.oldest_pending_age_s = float(age) if isinstance(age, int | float) else None
        pos = message.get("pos")
        row.pos = dict(pos) if isinstance(pos, dict) else {}
        printers = message.get("printers")
        if isinstance(printers, list):
            row.printers_not_ok = [
                f"{p.get('name', '?')}:{p.get('state', '?')}"
                for p in printers
                if isinstance(p, dict) and p.get("state") != "ok"
            ]
        disk = message.get("disk_free_mb")
        row.disk_free_mb = float(disk) if isinstance(disk, int | float) else None
        row.health_ts = _str_or_none(message.get("ts"))
        row.version = _str_or_none(message.get("version")) or row.version

    @staticmethod
    def _alert(row: VenueRow, message: dict[str, Any], now: float) -> None:
        name = _str_or_none(message.get("alert")) or "?"
        at = _epoch(message.get("ts")) or now
        row.open_alerts += 1
        row.latest_alerts = sorted([*row.latest_alerts, (at, name)])[-LATEST_ALERTS:]


def _decode(payload: bytes | bytearray | str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def sort_key(row: VenueRow) -> tuple[int, str]:
    """Offline venues first, then venues with open alerts, then the rest; by name within each group."""
    rank = 0 if row.state == "offline" else 1 if row.open_alerts else 2
    return rank, row.venue


COLUMNS = (
    ("VENUE", 20),
    ("STATE", 8),
    ("FOR", 5),
    ("SEEN", 5),
    ("PEND/FAIL", 9),
    ("OLDEST", 6),
    ("POS", 22),
    ("PRINTERS", 20),
    ("ALERTS", 0),  # the last column is not cut
)


def _cell(text: str, width: int) -> str:
    return text if width == 0 or len(text) <= width else text[: width - 1] + "~"


def render_table(fleet: Fleet, now: float) -> str:
    """Return the fleet as a fixed-width table, one line per venue, sorted by ``sort_key``; ages relative to ``now``."""
    lines = [" ".join(f"{name:<{width}}" for name, width in COLUMNS).rstrip()]
    for row in sorted(fleet.venues.values(), key=sort_key):
        since = _epoch(row.since)
        pos_state = str(row.pos.get("state", "-"))
        if row.pos.get("circuit") not in (None, "closed"):
            pos_state += f"/{row.pos['circuit']}"
        alerts = f"{row.open_alerts}" if row.open_alerts else "-"
        if row.latest_alerts:
            alerts += " " + ",".join(f"{name}({_age(now - at)})" for at, name in reversed(row.latest_alerts))
        failed = int(row.outbox.get("failed", 0))
        cells = (
            row.venue,
            row.state,
            _age(None if since is None else now - since),
            _age(None if row.last_seen is None else now - row.last_seen),
            f"{row.pending}/{failed}" if row.outbox else "-",
            _age(row.oldest_pending_age_s),
            pos_state,
            ",".join(row.printers_not_ok) or ("ok" if row.health_ts else "-"),
            alerts,
        )
        line = " ".join(f"{_cell(text, width):<{width}}" for text, (_, width) in zip(cells, COLUMNS, strict=True))
        lines.append(line.rstrip())
    return "\n".join(lines)


def as_json(fleet: Fleet) -> list[dict[str, Any]]:
    """Return one JSON-ready dict per venue, in ``sort_key`` order, with absolute (ISO 8601 UTC) times."""
    return [
        {
            "venue": row.venue,
            "state": row.state,
            "since": row.since,
            "version": row.version,
            "boot_id": row.boot_id,
            "seq": row.seq,
            "last_seen": _iso(row.last_seen),
            "outbox": row.outbox,
            "pending": row.pending,
            "oldest_pending_age_s": row.oldest_pending_age_s,
            "pos": row.pos,
            "printers_not_ok": row.printers_not_ok,
            "disk_free_mb": row.disk_free_mb,
            "health_ts": row.health_ts,
            "open_alerts": row.open_alerts,
            "latest_alerts": [{"alert": name, "ts": _iso(at)} for at, name in reversed(row.latest_alerts)],
        }
        for row in sorted(fleet.venues.values(), key=sort_key)
    ]


# ---- command line and I/O -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where and how the console connects."""

    host: str
    port: int
    prefix: str = "venues"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``console`` to the sub-command parser ``sub``."""
    console = sub.add_parser(
        "console",
        parents=[config_parent, json_parent],
        help="fleet view: every venue's status, health and alerts from the MQTT broker",
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
    console.set_defaults(handler=cmd_console)


def split_broker(value: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (IPv6 as ``[addr]:port``); raise ValueError on a bad port."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    port = int(port_text) if port_text else default_port
    if not host or not 1 <= port <= 65535:
        msg = f"not a broker address: {value!r}"
        raise ValueError(msg)
    return host, port


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


def cmd_console(args: argparse.Namespace) -> int:
    """Show the fleet: once (``--once``) or redrawn every 2 s until Ctrl-C, reconnecting after the first connect."""
    try:
        conn = connection_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.once is not None and args.once < 0:
        print("error: --once needs a number of seconds >= 0", file=sys.stderr)
        return EXIT_USAGE
    fleet = Fleet(conn.prefix)
    import aiomqtt

    try:
        if args.once is not None:
            asyncio.run(watch(conn, fleet, seconds=args.once))
            print(json.dumps(as_json(fleet), indent=2) if args.json else render_table(fleet, time.time()))
        else:
            asyncio.run(watch_live(conn, fleet, on_tick=_redraw(args.json)))
    except (aiomqtt.MqttError, TimeoutError, ssl.SSLError, OSError) as exc:
        print(f"error: MQTT broker {conn.host}:{conn.port}: {_reason(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _redraw(as_json_output: bool) -> Callable[[Fleet], None]:
    clear = sys.stdout.isatty()

    def draw(fleet: Fleet) -> None:
        text = json.dumps(as_json(fleet)) if as_json_output else render_table(fleet, time.time())
        if clear:
            sys.stdout.write("\x1b[H\x1b[2J")
        print(text, flush=True)

    return draw


def tls_context(conn: Connection) -> ssl.SSLContext | None:
    """Return the TLS context for ``conn`` (None without TLS); raise OSError or ssl.SSLError on unusable files."""
    if not conn.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=str(conn.ca_file) if conn.ca_file else None)
    except OSError as exc:  # ssl.SSLError included
        raise OSError(f"cannot use CA file {conn.ca_file}: {_reason(exc)}") from None
    if conn.cert_file is not None:
        try:
            context.load_cert_chain(conn.cert_file, conn.key_file)
        except OSError as exc:
            key = f" with key {conn.key_file}" if conn.key_file else ""
            raise OSError(f"cannot use client certificate {conn.cert_file}{key}: {_reason(exc)}") from None
    return context


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def watch_live(
    conn: Connection,
    fleet: Fleet,
    *,
    on_tick: Callable[[Fleet], None] | None = None,
    notice: Callable[[str], None] = _notice,
    initial_delay: float = RECONNECT_INITIAL_SECONDS,
    max_delay: float = RECONNECT_MAX_SECONDS,
) -> None:
    """Watch until cancelled; the first connect must succeed (else raise), later losses are retried with backoff.

    Each loss, failed retry and reconnect is one ``notice`` line; ``fleet`` is kept (retained messages refill it).
    """
    import aiomqtt

    delay = initial_delay
    connected = False
    while True:
        session = asyncio.Event()
        back = f"reconnected to {conn.host}:{conn.port}" if connected else None

        def subscribed(session: asyncio.Event = session, back: str | None = back) -> None:
            session.set()
            if back is not None:
                notice(back)

        try:
            await watch(conn, fleet, seconds=None, on_tick=on_tick, on_connected=subscribed)
            reason = "the broker ended the session"
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            if not connected and not session.is_set():
                raise
            reason = _reason(exc)
        if session.is_set():
            connected, delay = True, initial_delay
            notice(f"broker lost: {reason}; reconnecting in {delay:g} s")
        else:
            notice(f"reconnect failed: {reason}; retrying in {delay:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def _reason(exc: BaseException) -> str:
    """One line saying why a connection failed; aiomqtt keeps the underlying error as the cause."""
    cause = exc.__cause__ or exc
    if isinstance(cause, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    return " ".join(str(cause).split()) or type(cause).__name__


async def watch(
    conn: Connection,
    fleet: Fleet,
    *,
    seconds: float | None,
    on_tick: Callable[[Fleet], None] | None = None,
    on_connected: Callable[[], None] | None = None,
) -> None:
    """Fold messages into ``fleet`` for ``seconds`` (or until the connection ends, ``on_tick`` every 2 s).

    Raise MqttError (or TimeoutError, OSError) when the connection fails or drops; ``on_connected`` runs on SUBACK.
    """
    import aiomqtt

    client = aiomqtt.Client(
        conn.host,
        conn.port,
        username=conn.username,
        password=conn.password,
        identifier=f"venue-agent-console-{uuid.uuid4().hex[:8]}",
        tls_context=tls_context(conn),
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    async with contextlib.AsyncExitStack() as stack:
        # aiomqtt 2.x waits for CONNACK without a limit: a broker that accepts TCP but stays silent must not hang us.
        await asyncio.wait_for(stack.enter_async_context(client), CONNECT_TIMEOUT_SECONDS)
        for kind in KINDS:
            await client.subscribe(f"{conn.prefix}/+/{kind}", qos=1)
        if on_connected is not None:
            on_connected()

        async def fold() -> None:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray | str):
                    fleet.apply(str(message.topic), payload, now=time.time())

        reader = asyncio.create_task(fold())
        try:
            if seconds is not None:
                done, _ = await asyncio.wait({reader}, timeout=seconds)
                if done:
                    reader.result()  # the connection dropped: surface its error
                return
            while True:
                if on_tick is not None:
                    on_tick(fleet)
                done, _ = await asyncio.wait({reader}, timeout=REDRAW_SECONDS)
                if done:
                    reader.result()
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
