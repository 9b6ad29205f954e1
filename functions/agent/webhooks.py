"""Webhooks: a tenant's endpoints, told when a session idles or a run ends. Pure.

An endpoint is registered through the API (``POST /v1/webhooks``) with a ``whsec_`` secret shown once, an optional
filter of event types, and a URL whose host the deployment allows (CDK context ``webhook_allowed_hosts``; https,
and on the local stack also http to 127.0.0.1). What is sent is thin, in the Managed Agents API's envelope
(``{id, created_at, type: "event", data: {type, id, organization_id, workspace_id}}``): it names the resource, and
the receiver reads it through the API. Deliveries are signed per Standard Webhooks by the sender adapter, so the
``standardwebhooks`` library and the anthropic SDK's ``client.beta.webhooks.unwrap`` verify them.

How an event travels (functions/handlers/webhooks.py):
    1. a run or a turn ends (functions/agent/lifecycle.py): ``WebhookNotifier.ended`` puts one message on the
       webhooks queue; a queue that refuses is reported (``take_failures``), never raised into the workflow;
    2. the webhooks function fans it out: one delivery message per endpoint of the tenant that wants its type;
    3. each delivery is one signed POST; one that fails is retried after ``backoff_seconds(attempt)`` until
       ``MAX_ATTEMPTS`` attempts, then it lands in the dead-letter queue.

An event's id is derived from the run, its turn and the type, so an end reported twice (a retried Finalize) is the
same event, with the same ``webhook-id``: receivers drop duplicates by it, as Standard Webhooks advises.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from functions.agent.errors import DeliveryFailedError, NotFoundError, RequestRejectedError
from functions.agent.hosts import host_allowed
from functions.agent.models import Run, RunStatus
from functions.agent.ports import Clock, WebhookQueue, WebhookSender, WebhookStore
from functions.agent.requests import Strict, parse

EventType = Literal[
    "session.status_idled",  # a turn idled: end_turn, retries_exhausted, refusal (the session's stop_reason says)
    "session.requires_action",  # a turn idled waiting for the client: a custom tool's result or a confirmation
    "session.budget_reached",  # a turn idled because a budget was reached
    "run.succeeded",  # a /runs run ended SUCCEEDED
    "run.failed",  # a /runs run ended otherwise: FAILED, CANCELLED, BUDGET_EXCEEDED, TIMED_OUT (its error says)
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
MAX_WEBHOOKS = 10  # per tenant: one fan-out is one SendMessageBatch
MAX_DESCRIPTION = 256
MAX_URL = 2048
MAX_ID = 64  # characters of a webhook id looked up (the ids Stepwise makes have 29; none longer is stored)
MAX_ATTEMPTS = 10  # deliveries of one event to one endpoint; then the dead-letter queue
RETRY_BASE_SECONDS = 30  # the first retry's delay; each later one doubles
RETRY_MAX_SECONDS = 3600  # no delay is longer (SQS allows visibility timeouts up to 12 hours)
WORKSPACE = "default"  # Stepwise has no workspaces: every event's data.workspace_id
Outcome = Literal["delivered", "gone", "refused"]  # of one delivery that did not fail (see Deliveries.deliver)


# ------------------------------------------------------------------------------------------- what is sent


def session_event_type(stop_reason: str) -> EventType:
    """The webhook event of a turn that idled with ``stop_reason`` (the session's ``stop_reason.type``)."""
    if stop_reason == "requires_action":
        return "session.requires_action"
    if stop_reason == "budget_reached":
        return "session.budget_reached"
    return "session.status_idled"


def ended_event_type(run: Run) -> EventType | None:
    """The event a run or a session's turn that ended announces; None while it has not ended."""
    if not run.status.terminal:
        return None
    if run.session is None:
        return "run.succeeded" if run.status is RunStatus.SUCCEEDED else "run.failed"
    from functions.agent.sessions import stop_reason  # the one mapping of a turn's end (imported by sessions only)

    return session_event_type(str(stop_reason(run.status, run.error, [])["type"]))


def event_id(tenant: str, resource_id: str, turn: int, event_type: str) -> str:
    """The same for every report of the same end: what receivers deduplicate by (``webhook-id``)."""
    digest = hashlib.sha256(f"{tenant}\n{resource_id}\n{turn}\n{event_type}".encode()).hexdigest()
    return f"wevt_{digest[:26]}"


class _Lazy(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use: the functions that end runs import this module


class EventData(_Lazy):
    """``data`` of an event: which resource, of which organization (Stepwise: the tenant)."""

    type: EventType
    id: str = Field(min_length=1)
    organization_id: str = Field(min_length=1)
    workspace_id: str = Field(min_length=1)


class WebhookEvent(_Lazy):
    """What an endpoint receives (the SDK's ``BetaWebhookEvent``); ``id`` is its ``webhook-id``."""

    id: str = Field(pattern=r"^wevt_[0-9a-f]{26}$")
    created_at: str
    type: Literal["event"]
    data: EventData


def envelope(run: Run) -> dict[str, Any] | None:
    """The thin event announcing that ``run`` (or its session's current turn) ended; None if it has not."""
    kind = ended_event_type(run)
    if kind is None:
        return None
    return {
        "id": event_id(run.tenant, run.run_id, run.turn, kind),
        "created_at": run.updated_at,
        "type": "event",
        "data": {"type": kind, "id": run.run_id, "organization_id": run.tenant, "workspace_id": WORKSPACE},
    }


def backoff_seconds(attempt: int, base: int = RETRY_BASE_SECONDS) -> int:
    """How long after failed attempt ``attempt`` (1, 2, ...) the next one is made: base, 2 x base, 4 x base, ..."""
    return int(min(base * 2 ** max(attempt - 1, 0), RETRY_MAX_SECONDS))


# ------------------------------------------------------------------------------------------- endpoints


class Webhook(_Lazy):
    """An endpoint as stored (its secret too: deliveries are signed with it)."""

    webhook_id: str
    tenant: str
    url: str
    secret: str = Field(repr=False)
    event_types: list[EventType] | None = None  # None: every type
    description: str = ""
    created_at: str

    def wants(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types

    def public(self) -> dict[str, Any]:
        """What the API shows (never the secret, but once: at creation)."""
        return {"type": "webhook", "id": self.webhook_id, "url": self.url, "event_types": self.event_types,
                "description": self.description, "created_at": self.created_at}  # fmt: skip


class CreateWebhook(Strict):
    url: str = Field(max_length=MAX_URL, description="https://, on a host the deployment allows")
    event_types: list[EventType] | None = Field(default=None, min_length=1, description="omit for every type")
    description: str = Field(default="", max_length=MAX_DESCRIPTION)


class Endpoints(_Lazy):
    """Where a deployment may deliver: ``hosts`` (CDK context ``webhook_allowed_hosts``: exact, or ``*.domain``),
    by https; ``http_hosts`` by https or plain http (the local stack's 127.0.0.1; never a deployment's)."""

    hosts: tuple[str, ...] = ()
    http_hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, hosts: str | None, http_hosts: str | None = None) -> Endpoints:
        def items(text: str | None) -> tuple[str, ...]:
            return tuple(item.strip().lower() for item in (text or "").split(",") if item.strip())

        return cls(hosts=items(hosts), http_hosts=items(http_hosts))

    def check(self, url: str) -> str:
        """The URL, if the deployment may deliver to it; else RequestRejectedError naming why."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise RequestRejectedError(f"url: not a valid URL ({exc})") from None
        host = (parts.hostname or "").rstrip(".")
        if not host or parts.scheme not in ("https", "http"):
            raise RequestRejectedError("url: an https:// URL with a host")
        if parts.username or parts.password:
            raise RequestRejectedError("url: credentials in the URL are refused (sign-in is the webhook's signature)")
        if parts.fragment:
            raise RequestRejectedError("url: a fragment (#...) is never sent: leave it out")
        if not url.isascii() or any(not 0x21 <= ord(char) <= 0x7E for char in url):
            raise RequestRejectedError(
                "url: printable ASCII only, no spaces (percent-encode the rest; a host in its IDNA xn-- form)"
            )
        if not self.hosts and not self.http_hosts:
            raise RequestRejectedError("webhooks are off in this deployment (CDK context webhook_allowed_hosts)")
        if parts.scheme == "http" and not host_allowed(host, self.http_hosts):
            raise RequestRejectedError(f"url: http:// is refused for {host[:80]!r}: use https://")
        if not host_allowed(host, (*self.hosts, *self.http_hosts)):
            raise RequestRejectedError(
                f"url: host {host[:80]!r} is not on this deployment's allow-list (CDK context webhook_allowed_hosts)"
            )
        if port == 0:
            raise RequestRejectedError("url: port 0 is refused")
        return url


def new_secret(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(token(32)).decode()


class Webhooks:
    """Registering, listing and removing a tenant's endpoints (``/v1/webhooks``)."""

    def __init__(
        self,
        *,
        store: WebhookStore,
        clock: Clock,
        endpoints: Endpoints,
        new_id: Callable[[], str],
        secret: Callable[[], str] = new_secret,
    ) -> None:
        self.store, self.clock, self.endpoints, self.new_id, self.secret = store, clock, endpoints, new_id, secret

    def create(self, tenant: str, raw: Any) -> dict[str, Any]:
        """The new endpoint as the API shows it, with its ``secret``: the only time it is shown."""
        request = parse(CreateWebhook, raw)
        url = self.endpoints.check(request.url)
        if len(self.store.list_webhooks(tenant)) >= MAX_WEBHOOKS:
            raise RequestRejectedError(f"a tenant has at most {MAX_WEBHOOKS} webhooks: delete one first")
        types = sorted(set(request.event_types), key=EVENT_TYPES.index) if request.event_types else None
        webhook = Webhook(webhook_id=self.new_id(), tenant=tenant, url=url, secret=self.secret(),
                          event_types=types, description=request.description,
                          created_at=self.clock.now().isoformat(timespec="seconds"))  # fmt: skip
        self.store.put_webhook(webhook)
        # the count above was read before this write, so concurrent registrations may all have passed it: each one
        # counts again after its own write (the store's list is consistent) and takes its endpoint back if the
        # tenant is over, so the last of them to count always sees every one kept
        if len(self.store.list_webhooks(tenant)) > MAX_WEBHOOKS:
            self.store.delete_webhook(tenant, webhook.webhook_id)
            raise RequestRejectedError(f"a tenant has at most {MAX_WEBHOOKS} webhooks: delete one first")
        return {**webhook.public(), "secret": webhook.secret}

    def get(self, tenant: str, webhook_id: str) -> Webhook:
        webhook = self.store.get_webhook(tenant, webhook_id) if 0 < len(webhook_id) <= MAX_ID else None
        if webhook is None:
            raise NotFoundError(f"webhook {webhook_id[:80]} not found")
        return webhook

    def list(self, tenant: str) -> list[Webhook]:
        return sorted(self.store.list_webhooks(tenant), key=lambda webhook: (webhook.created_at, webhook.webhook_id))

    def delete(self, tenant: str, webhook_id: str) -> dict[str, Any]:
        self.get(tenant, webhook_id)
        self.store.delete_webhook(tenant, webhook_id)
        return {"type": "webhook_deleted", "id": webhook_id}


# ------------------------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class AnnounceFailure:
    """An end that could not be announced (the queue refused): its event was not sent to anyone."""

    tenant: str
    event_id: str
    event_type: str
    resource_id: str
    reason: str


class WebhookNotifier:
    """Announces ended runs and turns: one message on the webhooks queue, never an error raised into the caller."""

    def __init__(self, *, queue: WebhookQueue) -> None:
        self.queue = queue
        self._failures: list[AnnounceFailure] = []

    def ended(self, run: Run) -> dict[str, Any] | None:
        """The event announced (None: the run has not ended). A queue that refuses is kept for ``take_failures``."""
        event = envelope(run)
        if event is None:
            return None
        try:
            self.queue.announce(run.tenant, event)
        except Exception as exc:  # whatever the queue's adapter raised: a webhook never fails a run
            self._failures.append(AnnounceFailure(tenant=run.tenant, event_id=str(event["id"]),
                                                  event_type=str(event["data"]["type"]), resource_id=run.run_id,
                                                  reason=f"{type(exc).__name__}: {exc}"[:500]))  # fmt: skip
        return event

    def take_failures(self) -> list[AnnounceFailure]:
        """The announcements that failed since the last call (the handler logs and counts them)."""
        failures, self._failures = self._failures, []
        return failures


class Deliveries:
    """The webhooks function's two jobs: fan an event out to the tenant's endpoints, deliver it to one."""

    def __init__(
        self,
        *,
        store: WebhookStore,
        queue: WebhookQueue,
        sender: WebhookSender,
        endpoints: Endpoints,
        retry_base_seconds: int = RETRY_BASE_SECONDS,
    ) -> None:
        self.store, self.queue, self.sender, self.endpoints = store, queue, sender, endpoints
        self.retry_base_seconds = retry_base_seconds

    def fan_out(self, tenant: str, event: dict[str, Any]) -> list[str]:
        """Queue one delivery per endpoint that wants the event; returns their ids."""
        kind = str(event["data"]["type"])
        wanted = [webhook.webhook_id for webhook in self.store.list_webhooks(tenant) if webhook.wants(kind)]
        if wanted:
            self.queue.deliver(tenant, wanted, event)
        return wanted

    def deliver(self, tenant: str, webhook_id: str, event: dict[str, Any], *, attempt: int, receipt: str) -> Outcome:
        """One attempt: ``delivered``; ``gone`` (the endpoint was deleted since) or ``refused`` (its host is no longer
        on the deployment's allow-list) send nothing, and are not tried again.

        Raises DeliveryFailedError after scheduling the next attempt (``queue.retry_later``), unless this was the
        last: then the message is left to the queue's dead-letter redrive."""
        webhook = self.store.get_webhook(tenant, webhook_id)
        if webhook is None:
            return "gone"
        try:
            self.endpoints.check(webhook.url)
        except RequestRejectedError:
            return "refused"
        try:
            self.sender.send(webhook.url, webhook.secret, str(event["id"]), event)
        except Exception as exc:
            last = attempt >= MAX_ATTEMPTS
            if not last:
                self.queue.retry_later(receipt, backoff_seconds(attempt, self.retry_base_seconds))
            raise DeliveryFailedError(
                f"attempt {attempt} of {MAX_ATTEMPTS} to {webhook_id}: {exc}", last_attempt=last
            ) from exc
        return "delivered"
