"""Lightspeed K-Series payloads written from the published reference, each with its source: contract fixtures.

OAS = the Order and Pay OpenAPI file, api-evangelist/lightspeed openapi/lightspeed-order-and-pay-api-openapi.yml
(commit 3cc966a, "Lightspeed Restaurant K Series Order and Pay API" 1.0.0), whose text matches
https://api-docs.lsk.lightspeed.app/operation/operation-apeplacetogoorder and the pages next to it. These are
the reference's own examples (values as published), not what our code produces; the tests hold our code to them.
"""

from __future__ import annotations

from typing import Any

# ---- token refresh ---------------------------------------------------------------------------------------

# RFC 6749 §6 (Refreshing an Access Token), its own example request, with the client authenticated by HTTP Basic
# as §2.3.1 says; the agent applies it to POST {base}/oauth/token (the K-Series token URL, Authorization FAQ:
# https://api-portal.lsk.lightspeed.app/quick-start/authentication/authorization).
TOKEN_CLIENT_ID = "s6BhdRkqt3"
TOKEN_CLIENT_SECRET = "gX1fBat3bV"  # the RFC's published example value
TOKEN_REQUEST: dict[str, Any] = {
    "method": "POST",
    "path": "/oauth/token",
    "headers": {
        "Authorization": "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW",
        "Content-Type": "application/x-www-form-urlencoded",
    },
    "body": "grant_type=refresh_token&refresh_token=tGzv3JOkF0XG5Qx2TlKWIA",
}
TOKEN_REFRESH_TOKEN = "tGzv3JOkF0XG5Qx2TlKWIA"  # the RFC's published example value

# The answer: RFC 6749 §5.1 fields; Lightspeed's "contains access_token, refresh_token, scope and expires_in"
# (https://api-portal.lsk.lightspeed.app/guides/best-practices/managing-access-tokens), access tokens live 60 min
# (Authorization FAQ, "Quick Facts"), scope orders-api (OAS securitySchemes). Token values from RFC 6749 §5.1.
TOKEN_ANSWER: dict[str, Any] = {
    "access_token": "2YotnFZFEjr1zCsicMWpAA",
    "token_type": "bearer",
    "expires_in": 3600,
    "refresh_token": "tGzv3JOkF0XG5Qx2TlKWIA-rotated",
    "scope": "orders-api",
}

# RFC 6749 §5.2: the two refusals the agent tells apart (docs/lightspeed-k.md).
TOKEN_INVALID_CLIENT: dict[str, Any] = {"error": "invalid_client"}  # 401, with WWW-Authenticate
TOKEN_INVALID_GRANT: dict[str, Any] = {"error": "invalid_grant"}  # 400: refresh token spent, revoked or expired

# ---- create a to-go order ----------------------------------------------------------------------------------

# OAS POST /o/op/1/order/toGo (apePlaceToGoOrder) request body: every field with the OAS's own example value
# (businessLocationId: apeBusinessLocationId example; items: apeToGoOrderItemLine / apeSubItemOrderLine examples;
# payment: apeOrderPayment examples; customerInfo: apeCustomerInfo examples).
TO_GO_BODY: dict[str, Any] = {
    "businessLocationId": 45454565682155,
    "thirdPartyReference": "MyAwesomeThirdPartyReference",
    "endpointId": "MY-AWESOME-ENDPOINT-ID",
    "customerInfo": {
        "firstName": "Jane",
        "lastName": "Doe",
        "email": "jane.doe@example.com",
        "contactNumberAsE164": "+14155552671",
    },
    "orderNote": "Sample Order Note",
    "maxTimeToAttemptOrderDeliverToPos": 60000,
    "accountProfileCode": "TOGOORDER",
    "payment": {"paymentMethod": "OOPAYMENT", "paymentAmount": 14.0, "tipAmount": 2.0},
    "collectionCode": "ABC-1234",
    "orderCollectionTimeAsIso8601": "2024-04-04T09:42:00.000+00:00",
    "items": [{"quantity": 1, "sku": "UGG-BB-PUR-06", "subItems": [{"quantity": 1, "sku": "ABC-123"}]}],
}
TO_GO_ANSWER: dict[str, Any] = {"status": "ok"}  # OAS apePlaceToGoOrder 200 "accepted"
TO_GO_DUPLICATE: dict[str, Any] = {"status": "fail", "msg": "reference has already been used 123456789"}  # OAS 409

# ---- notifications (OAS "webhooks") -------------------------------------------------------------------------

# OAS "apeOrder notification", example successfulWithoutAccountInfo: ikentooAccountId is a STRING here, while
# apeBaseWebhookInformation types iKentooAccountId as int64; both must be accepted.
ORDER_SUCCESS: dict[str, Any] = {
    "status": "SUCCESS",
    "ikentooAccountId": "2114502594134196",
    "ikentooAccountIdentifier": "A123080.14",
    "thirdPartyReference": "REF11",
    "type": "ORDER",
}
# OAS "apeOrder notification", example succesfulWithAccount (account snapshot trimmed): the id as a NUMBER.
ORDER_SUCCESS_NUMERIC_ID: dict[str, Any] = {
    "thirdPartyReference": "order-wFUBVgHNGPAJsryIrSaE",
    "businessLocationId": 247158188015618,
    "status": "SUCCESS",
    "account": {"ikaccountId": "A17700.3", "tableNumber": 3, "posId": 17700},
    "ikentooAccountId": 304087979524124,
    "ikentooAccountIdentifier": "A17700.3",
    "type": "ORDER",
}
# OAS "apeOrder notification", example failure (no type: it defaults to ORDER).
ORDER_FAILURE: dict[str, Any] = {
    "status": "FAILURE",
    "reason": "A consumer already exists for this email address with a different external reference.",
    "thirdPartyReference": "REF12212",
}
# OAS "apeItem availability notification", examples itemRestricted and itemNotRestricted.
ITEM_RESTRICTED: dict[str, Any] = {
    "sku": "UGG-BB-PUR-06",
    "businessLocationId": 247158188015618,
    "count": 5,
    "countUpdatedAt": "2024-04-04T09:42:00.000+00:00",
    "status": "RESTRICTED",
    "type": "ITEM",
}
ITEM_NOT_RESTRICTED: dict[str, Any] = {**ITEM_RESTRICTED, "count": None, "status": "NOT_RESTRICTED"}
# OAS "apeOnline Ordering API Readiness notification", examples onlineOrderingAPIReady / onlineOrderingAPINotReady.
READINESS_READY: dict[str, Any] = {
    "businessLocationId": 247158188015618,
    "lastUpdatedAt": "2025-10-04T09:40:00.000+00:00",
    "status": "READY",
    "type": "ORDER_API",
    "onlineOrderingApiConfiguration": {"enabled": True, "orderProfileId": 25769803781, "staffId": 3},
    "posStatus": {"salesPeriod": "OPENED", "acceptingOnlineOrders": True, "availableDevices": True},
}
READINESS_NOT_READY: dict[str, Any] = {
    "businessLocationId": 247158188015618,
    "lastUpdatedAt": "2025-10-04T09:40:00.000+00:00",
    "status": "NOT_READY",
    "type": "ORDER_API",
    "onlineOrderingApiConfiguration": {"enabled": False, "orderProfileId": None, "staffId": None},
    "posStatus": {"salesPeriod": "CLOSED", "acceptingOnlineOrders": False, "availableDevices": False},
}
