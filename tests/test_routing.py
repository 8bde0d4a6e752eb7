"""Kitchen routing: which items go on which printer's ticket, and where each ticket fails over to."""

from __future__ import annotations

from dataclasses import dataclass

from agent.domain.routing import TicketPart, route_items


@dataclass(frozen=True)
class P:
    """A printer as routing sees it."""

    name: str
    categories: tuple[str, ...] | None = None

    def takes_category(self, category: str | None) -> bool:
        """Unset categories take everything; else a case-insensitive match."""
        if self.categories is None:
            return True
        return category is not None and category.casefold() in {c.casefold() for c in self.categories}


def test_printers_taking_everything_make_one_ticket_with_failover_in_order() -> None:
    """Two catch-all printers: one ticket, all items, first printer then the second."""
    assert route_items(["Pizza", "Drinks"], [P("pass"), P("backup")]) == [
        TicketPart(part=1, parts=1, items=None, printers=("pass", "backup"))
    ]


def test_stations_split_the_order_one_ticket_each_numbered() -> None:
    """Grill takes pizza, bar takes drinks: two tickets, 1 of 2 and 2 of 2, each with its own items."""
    parts = route_items(["Pizza", "Drinks", "pizza"], [P("grill", ("Pizza",)), P("bar", ("Drinks",))])
    assert parts == [
        TicketPart(part=1, parts=2, items=(0, 2), printers=("grill", "bar")),
        TicketPart(part=2, parts=2, items=(1,), printers=("bar", "grill")),
    ]


def test_a_catch_all_printer_is_the_first_failover_for_a_station() -> None:
    """A station's ticket fails over first to printers that take its items, then to the rest."""
    printers = [P("grill", ("Pizza",)), P("bar", ("Drinks",)), P("pass")]
    parts = route_items(["Pizza", "Drinks"], printers)
    assert [p.printers for p in parts] == [("grill", "pass", "bar"), ("bar", "pass", "grill")]


def test_an_item_no_printer_names_goes_to_the_first_printer_not_nowhere() -> None:
    """A dessert with no dessert printer, and an item with no category, still print."""
    parts = route_items(["Pizza", "Dessert", None], [P("grill", ("Pizza",)), P("bar", ("Drinks",))])
    assert parts == [TicketPart(part=1, parts=1, items=None, printers=("grill", "bar"))]


def test_an_uncategorised_item_goes_to_a_catch_all_printer() -> None:
    """Items without a category go to the first printer that takes everything."""
    parts = route_items(["Drinks", None], [P("bar", ("Drinks",)), P("kitchen")])
    assert parts == [
        TicketPart(part=1, parts=2, items=(0,), printers=("bar", "kitchen")),
        TicketPart(part=2, parts=2, items=(1,), printers=("kitchen", "bar")),
    ]


def test_no_printers_gives_one_ticket_with_nowhere_to_go() -> None:
    """Routing never drops a ticket: with no printers the caller sees an empty candidate list."""
    assert route_items(["Pizza"], []) == [TicketPart(part=1, parts=1, items=None, printers=())]
