"""The OpenAPI 3.1 document of the intake API, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from agent import __version__
from agent.api.operations import PaymentUpdate
from agent.domain.models import MAX_MODIFIER_DEPTH, Order
from agent.domain.states import ErrorClass, State

REF = "#/components/schemas/{model}"
ADDRESS = {"$ref": REF.format(model="Address")}


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail", "errors"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                    },
                },
            },
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _problems(*codes: int, unavailable_text: str | None = None) -> dict[str, Any]:
    text = {
        401: "Missing or wrong bearer token",
        404: "No such order",
        409: "The order's state forbids this",
        413: "Body over intake.max_body_kb",
        422: (
            "Invalid: every field error listed. Besides the schema, an order must satisfy rules JSON Schema cannot"
            " state: total = items (unit_price x quantity, modifiers included) + charges - discounts; venue_id, when"
            " given, is this agent's venue.id; customer.name unless fulfillment.type is dine_in; modifiers nested"
            f" at most {MAX_MODIFIER_DEPTH} deep; text without control characters; integers as JSON integers"
        ),
        503: "Storage unavailable or below storage.min_free_mb; nothing was stored (see Retry-After)",
    }
    if unavailable_text is not None:
        text[503] = unavailable_text
    ref = {"$ref": REF.format(model="Problem")}
    return {
        str(code): {"description": text[code], "content": {"application/problem+json": {"schema": ref}}}
        for code in codes
    }


def _availability_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["accepting", "reason", "since", "seq"],
        "properties": {
            "accepting": {"type": "boolean", "description": "Whether an order taken now reaches the POS or paper"},
            "reason": {"type": "string", "description": "Why, in stable words: ok, pos_down_and_no_printer, ..."},
            "detail": {"type": "string", "description": "The same for people"},
            "since": {"type": "string", "format": "date-time", "description": "When accepting took this value"},
            "seq": {"type": "integer", "minimum": 1, "description": "Grows by one with every published change"},
        },
    }


def _order_links() -> dict[str, Any]:
    """OpenAPI links from an accepted order to every operation addressed by its ``order_id``."""
    by_id = {"order_id": "$response.body#/order_id"}
    operations = {
        "GetOrder": "getOrder",
        "ReplaceOrder": "replaceOrder",
        "PayOrder": "payOrder",
        "CancelOrder": "cancelOrder",
        "ResubmitOrder": "resubmitOrder",
        "ReprintOrder": "reprintOrder",
    }
    return {name: {"operationId": op, "parameters": by_id} for name, op in operations.items()}


@cache
def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document of every intake endpoint served by this version."""
    order_schema = Order.model_json_schema(ref_template=REF)
    defs = order_schema.pop("$defs", {})
    if "Fulfillment" in defs:
        # The per-type rules of Fulfillment's validator, in the schema so generated orders can satisfy them.
        needs = {"dine_in": ("table", {"type": "string", "minLength": 1}), "delivery": ("address", ADDRESS)}
        defs["Fulfillment"]["allOf"] = [
            {
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"required": [field], "properties": {field: schema}},
            }
            for kind, (field, schema) in needs.items()
        ]
    payment_schema = PaymentUpdate.model_json_schema(ref_template=REF)
    accepted = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in State]},
            "duplicate": {"type": "boolean"},
        },
    }
    order_id = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
    state_ref = {"$ref": REF.format(model="OrderState")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "venue-agent intake API",
            "version": __version__,
            "description": "Orders in, durably stored before they are acknowledged. Money is integer minor units.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **defs,
                "Order": order_schema,
                "PaymentUpdate": payment_schema,
                "Accepted": accepted,
                "Problem": _problem_schema(),
                "Availability": _availability_schema(),
                "OrderState": {"type": "string", "enum": [s.value for s in State]},
                "ErrorClass": {"type": "string", "enum": [e.value for e in ErrorClass]},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/orders": {
                "post": {
                    "operationId": "submitOrder",
                    "summary": "Submit an order; answered only after it is committed to disk",
                    "requestBody": {"required": True, **_json({"$ref": REF.format(model="Order")})},
                    "responses": {
                        "202": {
                            "description": "Stored",
                            **_json({"$ref": REF.format(model="Accepted")}),
                            "links": _order_links(),
                        },
                        "200": {
                            "description": "Duplicate of a stored order (same id, same content)",
                            **_json({"$ref": REF.format(model="Accepted")}),
                            "links": _order_links(),
                        },
                        **_problems(401, 409, 413, 422, 503),
                    },
                },
                "get": {
                    "operationId": "listOrders",
                    "summary": "List orders, newest first",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": state_ref},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        },
                    ],
                    "responses": {"200": {"description": "Orders"}, **_problems(401, 422)},
                },
            },
            "/v1/orders/{order_id}": {
                "get": {
                    "operationId": "getOrder",
                    "summary": "The order, its state, attempts, last error and class, POS reference, tickets, history",
                    "parameters": [order_id],
                    "responses": {"200": {"description": "The order"}, **_problems(401, 404)},
                },
                "put": {
                    "operationId": "replaceOrder",
                    "summary": "Replace an order that is not yet in the POS",
                    "parameters": [order_id],
                    "requestBody": {"required": True, **_json({"$ref": REF.format(model="Order")})},
                    "responses": {"200": {"description": "Replaced"}, **_problems(401, 404, 409, 413, 422, 503)},
                },
            },
            "/v1/orders/{order_id}/payment": {
                "post": {
                    "operationId": "payOrder",
                    "summary": "Mark a held unpaid order paid; it then proceeds",
                    "parameters": [order_id],
                    "requestBody": {"required": True, **_json({"$ref": REF.format(model="PaymentUpdate")})},
                    "responses": {"200": {"description": "Paid"}, **_problems(401, 404, 409, 422)},
                },
            },
            "/v1/orders/{order_id}/cancel": {
                "post": {
                    "operationId": "cancelOrder",
                    "summary": "Cancel an order that is not yet in the POS",
                    "parameters": [order_id],
                    "responses": {"200": {"description": "Cancelled"}, **_problems(401, 404, 409)},
                },
            },
            "/v1/orders/{order_id}/resubmit": {
                "post": {
                    "operationId": "resubmitOrder",
                    "summary": "Send a failed order to the queue again, attempts reset",
                    "parameters": [order_id],
                    "responses": {"202": {"description": "Queued"}, **_problems(401, 404, 409)},
                },
            },
            "/v1/orders/{order_id}/reprint": {
                "post": {
                    "operationId": "reprintOrder",
                    "summary": "Print the ticket again, marked REPRINT n",
                    "parameters": [order_id],
                    "responses": {"202": {"description": "Print requested"}, **_problems(401, 404, 409)},
                },
            },
            "/v1/availability": {
                "get": {
                    "operationId": "getAvailability",
                    "summary": "Whether the kitchen can take an order now (as the retained MQTT P/availability)",
                    "responses": {
                        "200": {
                            "description": "The published value",
                            **_json({"$ref": REF.format(model="Availability")}),
                        },
                        **_problems(
                            401, 503, unavailable_text="Not decided yet: the agent is starting (see Retry-After)"
                        ),
                    },
                },
            },
            "/v1/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Health snapshot; 200 when ready (outbox open, loops running), 503 otherwise",
                    "responses": {
                        "200": {"description": "Ready", **_json({"type": "object"})},
                        "503": {"description": "Not ready", **_json({"type": "object"})},
                        **_problems(401),
                    },
                },
            },
        },
    }
