"""Auto-snooze: until 08:00 next morning in the venue's zone (DST-correct), rows, CLI, flagged tickets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.cli.main import main
from agent.outbox import snoozes
from agent.outbox.store import Outbox

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("now", "tz", "expected_local"),
    [
        # An evening sell-out reopens at 08:00 the next morning.
        (datetime(2026, 11, 23, 19, 30, tzinfo=UTC), LONDON, datetime(2026, 11, 24, 8, 0)),
        # Just after midnight local, "next morning" is the same calendar day.
        (datetime(2026, 11, 24, 0, 30, tzinfo=UTC), LONDON, datetime(2026, 11, 24, 8, 0)),
        # At 08:00 sharp it is the next day's 08:00.
        (datetime(2026, 11, 24, 8, 0, tzinfo=UTC), LONDON, datetime(2026, 11, 25, 8, 0)),
        # The night the clocks go forward (29 March 2026, 01:00 -> 02:00 UTC+1): still 08:00 local.
        (datetime(2026, 3, 28, 21, 0, tzinfo=UTC), LONDON, datetime(2026, 3, 29, 8, 0)),
        # The night they go back (25 October 2026): still 08:00 local.
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), LONDON, datetime(2026, 10, 25, 8, 0)),
        # Another zone: 22:00 in New York on the eve of its DST end (1 November 2026).
        (datetime(2026, 11, 1, 2, 0, tzinfo=UTC), NEW_YORK, datetime(2026, 11, 1, 8, 0)),
    ],
)
def test_snooze_ends_at_eight_local_time(now: datetime, tz: ZoneInfo, expected_local: datetime) -> None:
    """08:00 on the venue's next calendar day, whatever the DST change in between."""
    until = snoozes.snooze_until(now, tz)
    assert until.astimezone(tz).replace(tzinfo=None) == expected_local
    assert until > now


def test_across_spring_forward_the_snooze_is_an_hour_shorter_in_real_time() -> None:
    """From 20:00 to 08:00 across the spring change is 11 real hours, not 12: the wall clock decides."""
    now = datetime(2026, 3, 28, 20, 0, tzinfo=LONDON)
    assert snoozes.snooze_until(now, LONDON) - now == timedelta(hours=11)


async def test_rows_replace_expire_and_clear(outbox: Outbox) -> None:
    """A snooze is in force until its time; a later snooze replaces it; clearing records an event."""
    now = outbox.clock.now()
    until = now + timedelta(hours=2)
    await outbox.write(
        lambda c: snoozes.snooze(c, ["PZ-MARG", "PA-LOB"], until=until, source="lightspeed", reason="x", now=now)
    )
    active = await outbox.read(lambda c: snoozes.active(c, now=now))
    assert [s.sku for s in active] == ["PA-LOB", "PZ-MARG"] and active[0].source == "lightspeed"
    assert await outbox.read(lambda c: snoozes.active(c, now=until + timedelta(seconds=1))) == []
    cleared = await outbox.write(lambda c: snoozes.clear(c, ["PZ-MARG", "NOPE"], now=now, source="technician"))
    assert cleared == ["PZ-MARG"]
    events = [e.type for e in await outbox.events_since(0)]
    assert events.count("snoozed") == 1 and events.count("unsnoozed") == 1


async def test_cli_lists_and_clears(tmp_path: Path, outbox: Outbox, capsys: pytest.CaptureFixture[str]) -> None:
    """``snoozes list`` shows the SKU and its end in local time; ``snoozes clear`` releases it."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[venue]\nid = "harbour-kitchen"\ntimezone = "Europe/London"\n[storage]\npath = "{outbox.path}"\n'
        # No agent listens on port 9 (discard): clear writes the file itself, as with the agent stopped.
        '[intake]\nlisten = "127.0.0.1:9"\n'
        '[pos]\ndriver = "http"\n[pos.http]\nurl = "http://127.0.0.1:9/orders"\n',
        encoding="utf-8",
    )
    now = datetime.now(UTC)
    until = snoozes.snooze_until(now, LONDON)
    await outbox.write(
        lambda c: snoozes.snooze(c, ["PA-LOB"], until=until, source="lightspeed", reason="sold out", now=now)
    )
    assert main(["snoozes", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "PA-LOB" in out and "08:00" in out and "lightspeed" in out
    assert main(["snoozes", "clear", "--config", str(config)]) == 2
    assert main(["snoozes", "clear", "PA-LOB", "--config", str(config)]) == 0
    assert "released: PA-LOB" in capsys.readouterr().out
    assert main(["snoozes", "list", "--config", str(config), "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
