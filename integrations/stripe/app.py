"""The Stripe endpoint (FastAPI): signed webhooks in, inline decisions out.

- `POST /stripe/webhook`: the raw body is verified with `stripe.Webhook.construct_event`
  against each endpoint secret (several while one is rotated) with Stripe's 300-second
  tolerance. Unsigned, badly signed, stale or unparsable: 400 and nothing happens. A
  verified event is put on Kafka `stripe_events` as received, and the answer (200) waits
  only for the broker's acknowledgement; `integrations.stripe.consumer` does the work.
  Keeping the event itself on a topic of its own keeps the request path free of Postgres,
  makes every event replayable, and leaves the idempotency (by event id) to one process.
- `POST /stripe/decide` (X-Api-Key): a PaymentIntent (the object, or the fields a checkout
  has before confirming) scored by the same inline scoring setup as `FraudScoring.Score`
  (serving.inline: model store, feature state, sink and feature sample), answered with the
  Stripe action; a payment it cannot score gets 422 naming the field.

    python -m integrations.stripe.app   (uvicorn on FRAUDOPS_STRIPE_HOST:FRAUDOPS_STRIPE_PORT)
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import stripe
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from fraudops.bands import BANDS
from fraudops.pii import configure_logging
from fraudops.schema import InvalidTransaction
from fraudops.settings import Settings, load_settings
from integrations.stripe.events import InvalidEvent, parse_event, transaction, transaction_id_of
from serving.inline import InlineScoring
from serving.kafka_io import AckingProducer, make_producer
from serving.scoring import NoModel, decode

log = logging.getLogger("fraudops.stripe")

THREE_D_SECURE = {"payment_method_options": {"card": {"request_three_d_secure": "challenge"}}}
# What a checkout does with each band, in Stripe's terms.
ACTIONS = {
    "ALLOW": {"action": "confirm", "confirm": True, "confirm_params": {}},
    "CHALLENGE": {"action": "confirm_with_3ds", "confirm": True, "confirm_params": THREE_D_SECURE},
    "BLOCK": {"action": "do_not_confirm", "confirm": False, "confirm_params": {}},
}


class WebhookRejected(ValueError):
    """A webhook request that is not a verified Stripe event."""


# Stripe's events are a few KB; anything far larger is not one, and must not be buffered.
MAX_BODY_BYTES = 1 << 20


async def bounded_body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_BODY_BYTES (declared or actual)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    return body


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, else 422 saying why."""
    try:
        body = json.loads(await bounded_body(request))
    except ValueError as err:  # not JSON, not UTF-8, or an integer of thousands of digits
        raise HTTPException(422, f"body: not JSON ({err})") from err
    if not isinstance(body, dict):
        raise HTTPException(422, "payment_intent: must be a JSON object")
    return body


def verify(payload: bytes, header: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event (as a dict), if any secret verifies the signature; else WebhookRejected
    saying why. The body is parsed here, not by the stripe library, which fails on a
    verified body of another shape than an event."""
    if not header:
        raise WebhookRejected("no Stripe-Signature header")
    problem = "no webhook secret configured"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=300)
        except stripe.SignatureVerificationError as err:
            problem = f"signature: {err.user_message or err}"
            continue
        except ValueError as err:  # not UTF-8
            raise WebhookRejected(f"body: {err}") from err
        try:
            return parse_event(payload)
        except InvalidEvent as err:
            raise WebhookRejected(f"body is not a Stripe event: {err}") from err
    raise WebhookRejected(problem)


class Parts:
    """What the endpoints share: the producer, and inline scoring."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.inline = InlineScoring(settings, "stripe")
        self.blocking = bool(getattr(self.inline.core.features, "shared", False))
        self.producer: AckingProducer | None = None

    def start(self) -> None:
        self.inline.start()
        self.producer = AckingProducer(make_producer(self.settings))

    def stop(self) -> None:
        self.inline.stop()
        if self.producer is not None:
            self.producer.close()

    def decide(self, intent: dict[str, Any]) -> dict[str, Any]:
        """Score a PaymentIntent; the answer a checkout acts on."""
        started = time.perf_counter_ns()
        tx = decode(transaction(intent), window=self.inline.window)
        batch = self.inline.score([tx], started)
        band = BANDS[int(batch.bands[0])]
        return {
            "payment_intent": tx["transaction_id"],
            "score": float(batch.scores[0]),
            "band": band,
            "reasons": batch.reasons[0],
            "model_version": batch.model.version,
            "latency_us": batch.latency_us,
            **ACTIONS[band],
        }


def partition_key(event: dict[str, Any]) -> str:
    """The payment an event is about, so a payment's events stay in order on one partition;
    the event's own id for an event about none, or one whose references the consumer will
    refuse (it is kept, to be dead-lettered with the reason, not refused here)."""
    try:
        return transaction_id_of(event["data"]["object"]) or event["id"]
    except InvalidEvent:
        return event["id"]


def create_app(settings: Settings) -> FastAPI:
    parts = Parts(settings)
    secrets = settings.stripe_secrets()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        parts.start()
        try:
            yield
        finally:
            parts.stop()

    app = FastAPI(title="fraudops Stripe integration", lifespan=lifespan)
    app.state.parts = parts

    @app.post("/stripe/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        payload = await bounded_body(request)
        try:
            event = verify(payload, request.headers.get("stripe-signature"), secrets)
        except WebhookRejected as err:
            log.warning("webhook refused: %s", err)
            raise HTTPException(400, str(err)) from err
        key = partition_key(event)
        topic = settings.topic_stripe_events
        await run_in_threadpool(parts.producer.send, topic, key, payload)
        return {"received": event["id"]}

    @app.post("/stripe/decide")
    async def decide(request: Request) -> JSONResponse:
        expected = settings.stripe_decide_api_key
        given = request.headers.get("x-api-key") or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "a valid X-Api-Key header is required")
        intent = await json_object(request)
        try:
            # A Redis state is a network call: off the event loop. In memory it is cheaper
            # to score here than to hop to a worker thread.
            if parts.blocking:
                return JSONResponse(await run_in_threadpool(parts.decide, intent))
            return JSONResponse(parts.decide(intent))
        except (InvalidEvent, InvalidTransaction) as err:
            raise HTTPException(422, str(err)) from err
        except NoModel as err:
            raise HTTPException(503, "no model loaded yet; retry shortly") from err

    return app


def main() -> None:
    import uvicorn

    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=settings.stripe_host, port=settings.stripe_port, log_config=None)


if __name__ == "__main__":
    main()
