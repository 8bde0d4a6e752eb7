"""Kitchen routing (``[[printers]] categories``): which items go on which printer's ticket; pure code.

Each item goes to the first printer, in configured order, whose categories take it; the items of one
printer make one ticket, numbered "n of N". A ticket fails over first to the other printers that take
all of its items, then to any other printer with the role: the kitchen gets every item somewhere, and
an item no printer's categories name goes to the first printer rather than nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RoutablePrinter(Protocol):
    """The part of a printer's settings routing needs."""

    @property
    def name(self) -> str:
        """The printer's unique name."""
        ...

    def takes_category(self, category: str | None) -> bool:
        """Whether the printer's categories include ``category``."""
        ...


@dataclass(frozen=True)
class TicketPart:
    """One ticket of an order: its items (indexes into ``order.items``, None for all) and printers to try."""

    part: int
    parts: int
    items: tuple[int, ...] | None
    printers: tuple[str, ...]


def route_items(categories: Sequence[str | None], printers: Sequence[RoutablePrinter]) -> list[TicketPart]:
    """Split an order whose items have ``categories`` into one ticket per printer that takes some of them.

    With no printers the order is one ticket with nowhere to go (the caller raises the alert). When a
    single printer takes every item, the ticket holds all items (``items`` is None).
    """
    if not printers:
        return [TicketPart(part=1, parts=1, items=None, printers=())]
    primary: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        home = next((p.name for p in printers if p.takes_category(category)), printers[0].name)
        primary.setdefault(home, []).append(index)
    order = [p.name for p in printers if p.name in primary]
    if len(order) == 1:
        only = order[0]
        return [TicketPart(part=1, parts=1, items=None, printers=_candidates(only, categories, printers, None))]
    return [
        TicketPart(
            part=n,
            parts=len(order),
            items=tuple(primary[name]),
            printers=_candidates(name, categories, printers, primary[name]),
        )
        for n, name in enumerate(order, start=1)
    ]


def _candidates(
    home: str, categories: Sequence[str | None], printers: Sequence[RoutablePrinter], items: list[int] | None
) -> tuple[str, ...]:
    wanted = [categories[i] for i in (items if items is not None else range(len(categories)))]
    others = [p for p in printers if p.name != home]
    matching = [p.name for p in others if all(p.takes_category(c) for c in wanted)]
    rest = [p.name for p in others if p.name not in matching]
    return (home, *matching, *rest)
