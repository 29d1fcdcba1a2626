"""Webhook channel: POST the result as JSON with Standard Webhooks headers."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from app.channels.base import EXCERPT_BYTES, GLOBAL_SECRET, Message, SendResult, excerpt
from app.ground import sealing, webhook_headers
from app.ground.config import Settings
from app.ground.statuses import Outcome
from app.net import destinations, own_addresses
from app.net.outbound import NO_ANSWER, RETRYABLE_STATUS, ClientPool, retry_after_seconds, timeouts

# The delivery policy caps the wait again (the retry schedule's longest); this only keeps it finite.
RETRY_AFTER_CAP_SECONDS = 86400.0
# A receiver's answer header that ends a delivery's retries (Svix's delivery control): any
# non-2xx answer carrying it is final. A 410 Gone is final anyway, as every 4xx but 408 and 429.
ABORT = "abort-message"
UNOPENED = (
    "a header value or this destination's signing secret is encrypted at rest and could not be "
    "decrypted: SECRETS_KEY is not set, or does not hold the key it was encrypted with"
)


class WebhookChannel:
    """Sends deliveries whose target is {"type": "webhook", "webhook_url": ..., "headers": {...}}."""

    name = "webhook"
    available = True

    def __init__(
        self, settings: Settings, resolve: destinations.Resolve = destinations.system_resolve
    ) -> None:
        self.timeout_seconds = settings.webhook_timeout_seconds
        # Results are signed with WEBHOOK_SECRET; batch events (target "signing") with their own.
        events_secret = settings.batch_events_webhook_secret or settings.webhook_secret
        self._signers = {
            name: Webhook(secret)
            for name, secret in (("results", settings.webhook_secret), ("batch_events", events_secret))
            if secret
        }
        self._allow_private = settings.webhook_allow_private
        # This server's own addresses: a webhook there would call Batchgate itself (a loop).
        self._own = own_addresses.of(settings)
        self._resolve = resolve
        # Straight through httpcore, one connection pool per send in flight (see ClientPool):
        # httpx's own layers (request building, URL parsing, cookies, redirects) were a fifth of
        # a delivery's CPU time. Redirects are not followed: a 3xx is the receiver's answer, and
        # following it could carry a signed payload somewhere the operator never configured. No
        # cookie a receiver sets is kept.
        self._timeouts = timeouts(settings.webhook_timeout_seconds)
        self._clients = ClientPool(
            settings.delivery_concurrency,
            functools.partial(httpcore.AsyncConnectionPool, ssl_context=httpx.create_ssl_context()),
        )

    async def close(self) -> None:
        await self._clients.aclose()

    def headers(self, message: Message, now: datetime | None = None) -> dict[str, str]:
        """The headers of one attempt, signed when its secret is set."""
        now = now or datetime.now(UTC)
        # The delivery's own headers first, so Batchgate's (all reserved) can never be replaced.
        headers = {
            **(message.target.get("headers") or {}),
            "content-type": "application/json",
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "x-batchgate-attempt": str(message.attempt),
        }
        if message.custom_id is not None:
            headers["x-batchgate-custom-id"] = header_safe(message.custom_id)
        if signature := self._signature(message, now):
            headers["webhook-signature"] = signature
        return headers

    def _signature(self, message: Message, now: datetime) -> str:
        """Every signature of one attempt, space-separated (Standard Webhooks: a receiver accepts
        the message when any one verifies): the destination's secrets, else the channel's own."""
        signatures: list[str] = []
        for secret in message.signing_secrets or (GLOBAL_SECRET,):
            if secret == GLOBAL_SECRET:
                signer = self._signers.get(message.target.get("signing", "results"))
            else:
                signer = _signer(secret)
            if signer is not None:
                signature = signer.sign(message.delivery_id, now, message.body.decode())
                if signature not in signatures:
                    signatures.append(signature)
        return " ".join(signatures)

    async def send(self, message: Message) -> SendResult:
        url = httpx.URL(message.target["webhook_url"])
        # Encrypted at rest and not opened by the core: sending would leak or mis-sign. Retried,
        # so that a SECRETS_KEY put right in time still lets it go out.
        if sealing.still_sealed(message.target) or any(map(sealing.is_sealed, message.signing_secrets)):
            return SendResult(Outcome.RETRYABLE_FAILURE, error=UNOPENED)
        # Checked at intake; again here in case a rule tightened since (the reasons name no value).
        if bad := webhook_headers.problems(message.target.get("headers")):
            return SendResult(Outcome.PERMANENT_FAILURE, error=f"refused: {'; '.join(bad)}")
        answer: list[Any] = []  # [response, body head] once the status line is in
        try:
            # One deadline for the whole attempt: httpx's timeouts are per read, so a receiver
            # dripping a byte at a time would otherwise hold the send (and its chunk) for ever.
            async with asyncio.timeout(self.timeout_seconds):
                port = url.port or destinations.DEFAULT_PORTS.get(url.scheme, 0)
                address = await destinations.pin(
                    url.host, self._allow_private, self._resolve, self._own, port
                )
                await self._post(url, address, message, answer)
        except destinations.Refused as exc:
            return SendResult(Outcome.PERMANENT_FAILURE, error=f"refused: {exc}")
        except destinations.Unresolvable as exc:
            return SendResult(Outcome.RETRYABLE_FAILURE, error=str(exc))
        except (TimeoutError, httpcore.TimeoutException) as exc:
            if not answer:
                return SendResult(Outcome.RETRYABLE_FAILURE, error=f"timeout: {type(exc).__name__}")
        except NO_ANSWER as exc:
            if not answer:
                return SendResult(Outcome.RETRYABLE_FAILURE, error=f"{type(exc).__name__}: {exc}")
        response, head = answer
        body = excerpt(bytes(head))
        status = response.status
        if 200 <= status < 300:
            return SendResult(Outcome.SUCCESS, http_status=status, response_excerpt=body)
        headers = httpx.Headers(response.headers)
        if headers.get("webhook-delivery", "").strip().lower() == ABORT:
            return SendResult(
                Outcome.PERMANENT_FAILURE,
                http_status=status,
                error=f"receiver answered {status} and asked not to retry (webhook-delivery: {ABORT})",
                response_excerpt=body,
            )
        if status in RETRYABLE_STATUS:
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                http_status=status,
                error=f"receiver answered {status}",
                response_excerpt=body,
                retry_after_seconds=retry_after_seconds(headers.get("retry-after"), RETRY_AFTER_CAP_SECONDS),
            )
        return SendResult(
            Outcome.PERMANENT_FAILURE,
            http_status=status,
            error=f"receiver answered {status}",
            response_excerpt=body,
        )

    async def _post(self, url: httpx.URL, address: str, message: Message, answer: list[Any]) -> None:
        """POST the message to `address`, the checked address of the URL's host; fills `answer`
        with the response as soon as its status is in, then with at most EXCERPT_BYTES of its
        body (the rest is never read: an endless body costs nothing, and a body cut short only
        shortens the excerpt)."""
        # Connect to the pinned address; the Host header and TLS (SNI and the certificate's
        # name) still use the URL's host.
        headers = [
            (b"host", url.netloc),
            (b"user-agent", b"batchgate-webhook/1"),
            (b"content-length", str(len(message.body)).encode()),
            *((name.encode(), value.encode()) for name, value in self.headers(message).items()),
        ]
        extensions: dict[str, Any] = {"timeout": self._timeouts}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        target = httpcore.URL(
            scheme=url.raw_scheme, host=address.encode(), port=url.port, target=url.raw_path
        )
        async with (
            self._clients.client() as pool,
            pool.stream(
                b"POST", target, headers=headers, content=message.body, extensions=extensions
            ) as response,
        ):
            head = bytearray()
            answer[:] = [response, head]
            async for chunk in response.aiter_stream():
                head += chunk
                if len(head) >= EXCERPT_BYTES:
                    return


def header_safe(value: str) -> str:
    """A custom id as a header value: as it is when it is printable ASCII without edge spaces,
    else percent-encoded UTF-8 (the body always carries it exactly)."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return quote(value, safe="")


@functools.lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    """A destination's signer (decoding its secret once, not on every send)."""
    return Webhook(secret)
