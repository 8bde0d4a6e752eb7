"""The orders ``venue-agent demo`` sends: realistic intake JSON for a pizza and pasta venue in Bristol.

``first_orders`` arrive while the POS is up, ``down_orders`` while it is down; ``demo_order`` fills in what every
order carries (schema version, payment, total from the items and charges).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def demo_order(order_id: str, *, now: datetime, **parts: Any) -> dict[str, Any]:
    """Return an intake order ``order_id`` made of ``parts``, paid by card in GBP unless they say otherwise."""
    items = parts.pop("items")
    charges = parts.pop("charges", {"delivery_fee": 0, "service_charge": 0, "tip": 0})
    total = sum(
        i["quantity"] * (i["unit_price"] + sum(m["quantity"] * m["unit_price"] for m in i.get("modifiers", [])))
        for i in items
    ) + sum(charges.values())
    payment_status = parts.pop("payment_status", "paid")
    return {
        "schema_version": 1,
        "id": order_id,
        "source": parts.pop("source", "web"),
        "created_at": now.isoformat(),
        "items": items,
        "charges": charges,
        "payment": {"status": payment_status, "method": "card", "amount": total, "currency": "GBP"},
        "total": total,
        **parts,
    }


def first_orders(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The orders that arrive while the POS is up, each with what the demo says about it."""
    pizza = {
        "name": "Margherita",
        "sku": "PZ-MARG",
        "quantity": 2,
        "unit_price": 950,
        "category": "Pizza",
        "course": 1,
        "allergens": ["gluten", "milk"],
        "modifiers": [{"name": "Extra basil", "sku": "MOD-BASIL", "quantity": 1, "unit_price": 50}],
    }
    return [
        (
            "ASAP pickup from the web shop",
            demo_order(
                "demo-1001",
                now=now,
                fulfillment={"type": "pickup"},
                customer={"name": "Sam Reed", "phone": "+447700900123"},
                items=[pizza],
                notes="No cutlery",
            ),
        ),
        (
            "Delivery with a tip and a note for the rider",
            demo_order(
                "demo-1002",
                now=now,
                source="app",
                fulfillment={
                    "type": "delivery",
                    "address": {"line1": "12 Harbour Row", "city": "Bristol", "postcode": "BS1 4RN"},
                    "instructions": "Ring the side door",
                },
                customer={"name": "Zoë Ødegård", "phone": "+447700900456"},
                items=[
                    {
                        "name": "Spaghetti carbonara",
                        "sku": "PA-CARB",
                        "quantity": 1,
                        "unit_price": 1250,
                        "category": "Pasta",
                        "allergens": ["egg", "gluten", "milk"],
                    }
                ],
                charges={"delivery_fee": 299, "service_charge": 0, "tip": 150},
            ),
        ),
        (
            "Dine-in at table 12 (QR code)",
            demo_order(
                "demo-1003",
                now=now,
                source="qr_table",
                fulfillment={"type": "dine_in", "table": "12", "covers": 2},
                items=[
                    {"name": "Burrata", "sku": "ST-BURR", "quantity": 1, "unit_price": 850, "course": 1},
                    {
                        "name": "Ribeye steak",
                        "sku": "MN-RIBEYE",
                        "quantity": 2,
                        "unit_price": 2400,
                        "course": 2,
                        "notes": "one medium-rare, one well done",
                    },
                ],
            ),
        ),
        (
            "Pre-order for two hours from now (buffered until 20 min before)",
            demo_order(
                "demo-1004",
                now=now,
                requested_at=(now + timedelta(hours=2)).isoformat(),
                fulfillment={"type": "pickup"},
                customer={"name": "Ines García"},
                items=[{"name": "Tiramisu", "sku": "DS-TIRA", "quantity": 4, "unit_price": 650}],
            ),
        ),
        (
            "An order with a dish the POS has sold out",
            demo_order(
                "demo-1005",
                now=now,
                source="kiosk",
                fulfillment={"type": "pickup"},
                customer={"name": "Lukas Müller"},
                items=[{"name": "Lobster linguine", "sku": "PA-LOBSTER", "quantity": 1, "unit_price": 2800}],
            ),
        ),
    ]


def down_orders(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The orders that arrive while the POS is down."""
    return [
        (
            "Pizza while the POS is down (the grill's printer is jammed)",
            demo_order(
                "demo-1006",
                now=now,
                fulfillment={"type": "pickup"},
                customer={"name": "Priya Shah"},
                items=[
                    {
                        "name": "Quattro formaggi with extra smoked mozzarella",
                        "sku": "PZ-QF",
                        "quantity": 1,
                        "unit_price": 1150,
                        "category": "Pizza",
                        "allergens": ["milk", "gluten"],
                    }
                ],
            ),
        ),
        (
            "Dine-in at table 4 while the POS is down",
            demo_order(
                "demo-1007",
                now=now,
                source="qr_table",
                fulfillment={"type": "dine_in", "table": "4", "covers": 1},
                items=[{"name": "Caesar salad", "sku": "SA-CAES", "quantity": 1, "unit_price": 900}],
            ),
        ),
        (
            "A pre-order that reached us 25 minutes after its time, with a nut allergy",
            demo_order(
                "demo-1008",
                now=now,
                requested_at=(now - timedelta(minutes=25)).isoformat(),
                fulfillment={
                    "type": "delivery",
                    "address": {"line1": "3 Quay Street", "city": "Bristol", "postcode": "BS1 4DB"},
                    "instructions": "Leave with the concierge",
                },
                customer={"name": "Ana Costa", "phone": "+447700900789"},
                items=[
                    {
                        "name": "Spaghetti carbonara",
                        "sku": "PA-CARB",
                        "quantity": 2,
                        "unit_price": 1250,
                        "category": "Pasta",
                        "allergens": ["egg", "gluten", "milk"],
                    }
                ],
                notes="Severe nut allergy, please no pesto anywhere near it",
            ),
        ),
        (
            "A pizza that will be cancelled",
            demo_order(
                "demo-1009",
                now=now,
                fulfillment={"type": "pickup"},
                customer={"name": "Noah Berg"},
                items=[{"name": "Diavola", "sku": "PZ-DIAV", "quantity": 1, "unit_price": 1050, "category": "Pizza"}],
            ),
        ),
    ]
