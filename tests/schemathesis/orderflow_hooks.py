"""schemathesis hooks for tests/schemathesis_e2e.rs (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key is bound to the first checkout body it came with: the same key with another
body is answered 422 `/problems/idempotency-key-reused`. No schema can say that, and
schemathesis draws keys from a small pool ("0", "00", ...), so a valid drawn key would often
come back with another body and the check that valid requests are accepted would fail on a rule
the document states in words. This hook makes each valid key name its body, as a real client's
keys do. Only cases meant to be valid are touched: a negative case (a bad key, a missing token)
is sent as drawn, and 422 is an expected answer to it anyway.

Quotes are priced against the store's catalog: a valid quote's cart is pointed at SKUs, a
currency and a country the store sells (see `sellable`).

A cancel of a random order id can only be 404; a valid cancel case is pointed at an order this
run placed (remembered from the checkouts' 202 answers), so its 202 and 409 answers are checked
against the document too.

A refund of a random order id can only be 404: a valid refund case is pointed at the completed
order the test placed for it (`ORDERFLOW_REFUNDABLE_ORDER`), in its currency and for one cent, so
it is counted and answered 202 (with an Idempotency-Key naming its body, as for checkouts).
"""

import hashlib
import json
import os
import re

import schemathesis

HEADER = "Idempotency-Key"
# What the document allows: 1 to 255 visible ASCII characters.
VALID_KEY = re.compile(r"[!-~]{1,255}")
DIGEST_CHARS = 16


# The store the test starts: what a cart must name to be priced rather than refused 422.
STORE_SKUS = ("SKU-0001", "SKU-0002")


def sellable(case):
    """Points a valid quote's cart at what the store sells, so quotes are priced (and their 200
    answers checked against the document) instead of mostly refused for an unknown SKU; the
    values stay within the schema."""
    body = case.body
    if not isinstance(body, dict):
        return
    body["currency"] = "USD"
    for i, line in enumerate(body.get("lines") or []):
        if isinstance(line, dict):
            line["sku"] = STORE_SKUS[i % len(STORE_SKUS)]
    address = body.get("shipping_address")
    if isinstance(address, dict):
        address["country"] = "US"


# The completed order valid refunds are pointed at, placed by the test before the run.
REFUNDABLE = os.environ.get("ORDERFLOW_REFUNDABLE_ORDER")
REFUNDS_PATH = "/v1/admin/orders/{id}/refunds"


def refundable(case):
    """Points a valid refund at the captured order, for one cent in the capture's currency:
    the order's capture of 100 units takes every refund a run draws."""
    if not REFUNDABLE or not case.path_parameters or not isinstance(case.body, dict):
        return
    case.path_parameters["id"] = REFUNDABLE
    case.body["amount"] = {"currency": "USD", "minor": 1}
    name_body_in_key(case)


def name_body_in_key(case):
    """Makes a valid Idempotency-Key name the case's body, so a key drawn again with another
    body stays a new request rather than a reuse (422)."""
    key = case.headers.get(HEADER) if case.headers else None
    if not isinstance(key, str) or not VALID_KEY.fullmatch(key):
        return
    body = json.dumps(case.body, sort_keys=True, default=repr).encode()
    digest = hashlib.sha256(body).hexdigest()[:DIGEST_CHARS]
    # Still 1 to 255 visible ASCII characters.
    case.headers[HEADER] = f"{key[: 255 - DIGEST_CHARS - 1]}-{digest}"


# Order ids from this run's accepted checkouts.
PLACED = []
CANCEL_PATH = "/v1/orders/{id}/cancel"


@schemathesis.hook
def after_call(context, case, response):
    if case.operation.path == "/v1/checkouts" and response.status_code == 202:
        try:
            PLACED.append(response.json()["order_id"])
        except (ValueError, KeyError, TypeError):
            pass


@schemathesis.hook
def before_call(context, case, **kwargs):
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if case.operation.path == "/v1/quotes" and positive:
        sellable(case)
        return
    if case.operation.path == CANCEL_PATH and positive and PLACED and case.path_parameters:
        case.path_parameters["id"] = PLACED[len(PLACED) // 2]
        return
    if case.operation.path == REFUNDS_PATH and positive:
        refundable(case)
        return
    if case.operation.path != "/v1/checkouts" or not case.headers:
        return
    # Editing a negative case would make schemathesis judge it again, from the declared
    # parameters alone, and lose what made it negative (say, a removed Authorization header).
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    name_body_in_key(case)
