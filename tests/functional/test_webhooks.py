"""Webhooks' adapters and functions against moto and a receiver on 127.0.0.1: the table's endpoints, the queue's
messages and visibility, the signed POST and its egress rules, and the path from a run's end to a verified
delivery through the real handlers."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as StandardWebhook

from functions.adapters import wiring
from functions.adapters.dynamodb_webhooks import DynamoDBWebhookStore
from functions.adapters.settings import ApiSettings, WebhooksSettings, load
from functions.adapters.webhook_delivery import HttpWebhookSender, SqsWebhookQueue
from functions.agent import ledger
from functions.agent.errors import NotFoundError, WebhookDeliveryError
from functions.agent.models import RunKey, RunStatus
from functions.agent.webhooks import Endpoints, Webhooks, new_secret
from functions.handlers import api, finalize, webhooks, workflow_ended
from functions.tools.egress import Egress
from stepwise.local.lambdas import LocalContext
from tests.fakes.clock import FixedClock
from tests.fakes.webhook_receiver import WebhookReceiver, receiving
from tests.functional.conftest import TABLE, Aws, http_event

EVENT = {
    "id": "wevt_" + "0" * 26,
    "created_at": "2026-11-21T12:00:00.000+00:00",
    "type": "event",
    "data": {"type": "run.succeeded", "id": "run_1", "organization_id": "default", "workspace_id": "default"},
}
LOCAL = Endpoints.parse("", "127.0.0.1")


@pytest.fixture
def webhooks_on(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """The functions' environment as the local stack has it: endpoints on 127.0.0.1 by http, reachable."""
    monkeypatch.setenv("STEPWISE_WEBHOOK_HTTP_HOSTS", "127.0.0.1")
    monkeypatch.setenv("STEPWISE_EGRESS_ALLOW_ADDRESSES", "127.0.0.1")
    wiring.reset()
    return aws


def sender(allow: str = "127.0.0.1", hosts: tuple[str, ...] = ("127.0.0.1",), timeout: float = 5) -> HttpWebhookSender:
    clock = FixedClock(datetime.now(UTC))  # signatures are checked against the receiver's clock (5 minutes either way)
    return HttpWebhookSender(egress=Egress.parse(allow), hosts=hosts, timeout_seconds=timeout, clock=clock)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:webhooks") -> Any:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
    } for m in messages]}  # fmt: skip


def receive(aws: Aws, visibility: int | None = None) -> list[dict[str, Any]]:
    extra = {} if visibility is None else {"VisibilityTimeout": visibility}
    return list(aws.sqs.receive_message(QueueUrl=aws.webhooks_queue_url, MaxNumberOfMessages=10,
                                        AttributeNames=["All"], **extra).get("Messages", []))  # fmt: skip


# ------------------------------------------------------------------------------------------- the table


def test_endpoints_are_kept_per_tenant_with_their_secret(aws: Aws) -> None:
    store = DynamoDBWebhookStore(TABLE, aws.dynamodb)
    ids = iter(["wh_1", "wh_2", "wh_3"])
    hooks = Webhooks(store=store, clock=FixedClock(), endpoints=LOCAL, new_id=lambda: next(ids), secret=new_secret)
    created = hooks.create("acme", {"url": "http://127.0.0.1:9/a", "event_types": ["run.failed", "run.succeeded"]})
    hooks.create("acme", {"url": "http://127.0.0.1:9/b", "description": "all"})
    hooks.create("other", {"url": "http://127.0.0.1:9/c"})
    assert [hook.webhook_id for hook in hooks.list("acme")] == ["wh_1", "wh_2"]
    kept = store.get_webhook("acme", "wh_1")
    assert kept is not None and kept.secret == created["secret"] and kept.event_types == ["run.succeeded", "run.failed"]
    assert store.get_webhook("other", "wh_1") is None  # another tenant's partition
    hooks.delete("acme", "wh_1")
    with pytest.raises(NotFoundError):
        hooks.get("acme", "wh_1")
    item = aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "T#other#WEBHOOKS"}, "sk": {"S": "WH#wh_3"}})
    assert item["Item"]["type"] == {"S": "webhook"}


# ------------------------------------------------------------------------------------------- the queue


def test_fan_out_is_one_message_per_endpoint_in_batches_and_a_retry_hides_the_message(aws: Aws) -> None:
    queue = SqsWebhookQueue(aws.webhooks_queue_url, aws.sqs)
    queue.announce("acme", EVENT)
    (announced,) = receive(aws, visibility=0)
    assert json.loads(announced["Body"]) == {"tenant": "acme", "event": EVENT}
    aws.sqs.delete_message(QueueUrl=aws.webhooks_queue_url, ReceiptHandle=announced["ReceiptHandle"])
    queue.deliver("acme", [f"wh_{n}" for n in range(12)], EVENT)  # two SendMessageBatch calls
    bodies = [json.loads(m["Body"]) for _ in range(3) for m in receive(aws)]
    assert sorted(b["webhook_id"] for b in bodies) == sorted(f"wh_{n}" for n in range(12))
    assert {json.dumps(b["event"]) for b in bodies} == {json.dumps(EVENT)}
    # a delivery retried later is invisible until then
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.webhooks_queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "12"
    queue.announce("acme", EVENT)
    (message,) = receive(aws, visibility=0)
    queue.retry_later(message["ReceiptHandle"], 600)
    assert receive(aws) == []


# ------------------------------------------------------------------------------------------- the signed POST


def test_a_delivery_is_signed_per_standard_webhooks() -> None:
    secret = new_secret()
    with receiving(secret=secret) as receiver:
        sender().send(receiver.url, secret, EVENT["id"], EVENT)
        (delivery,) = receiver.wait_for(1)
    assert delivery.error is None and delivery.verified == EVENT and delivery.path == "/hooks"
    assert delivery.headers["webhook-id"] == EVENT["id"] and delivery.headers["content-type"] == "application/json"
    # what the headers say, checked by hand as well: v1 = HMAC-SHA256 of "{id}.{timestamp}.{body}"
    sent_at = datetime.fromtimestamp(int(delivery.headers["webhook-timestamp"]), UTC)
    assert delivery.headers["webhook-signature"] == StandardWebhook(secret).sign(EVENT["id"], sent_at, delivery.body)


@pytest.mark.parametrize(("status", "problem"), [(500, "answered 500"), (302, "redirects are not followed")])
def test_an_answer_other_than_2xx_is_a_failed_attempt(status: int, problem: str) -> None:
    secret = new_secret()
    with receiving(secret=secret, answers=[status]) as receiver:
        with pytest.raises(WebhookDeliveryError, match=problem):
            sender().send(receiver.url, secret, EVENT["id"], EVENT)
        assert len(receiver.wait_for(1)) == 1  # it was sent once, and a redirect was not followed


def test_a_receiver_that_is_down_is_a_failed_attempt() -> None:
    receiver = WebhookReceiver()
    receiver.reserve_port()  # nothing listens there
    with pytest.raises(WebhookDeliveryError, match="ConnectError"):
        sender().send(receiver.url, new_secret(), EVENT["id"], EVENT)


@pytest.mark.parametrize(
    ("allow", "hosts", "problem"),
    [("", ("127.0.0.1",), "loopback"), ("127.0.0.1", ("hooks.example.com",), "not allowed")],
)
def test_an_address_or_host_the_deployment_does_not_allow_is_never_sent_to(
    allow: str, hosts: tuple[str, ...], problem: str
) -> None:
    with receiving(secret=new_secret()) as receiver:
        with pytest.raises(WebhookDeliveryError, match=f"refused before sending.*{problem}"):
            sender(allow, hosts).send(receiver.url, "whsec_" + "A" * 44, EVENT["id"], EVENT)
        assert receiver.deliveries == []


# ------------------------------------------------------------------------------------------- the functions


def register(context: LocalContext, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    answer = api.handler(http_event("POST", "/v1/webhooks", body), context)
    return int(answer["statusCode"]), dict(json.loads(answer["body"]))


def drain(aws: Aws, context: LocalContext) -> list[dict[str, Any]]:
    """Hand every visible message of the webhooks queue to the webhooks function, as the event source mapping does
    (deleting those it did not report as failed); the batch failures it reported."""
    failures: list[dict[str, Any]] = []
    while messages := receive(aws):
        result = webhooks.handler(sqs_event(messages), context)
        failures += result["batchItemFailures"]
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                aws.sqs.delete_message(QueueUrl=aws.webhooks_queue_url, ReceiptHandle=message["ReceiptHandle"])
    return failures


def test_a_run_that_ends_is_delivered_signed_and_a_failed_delivery_waits_its_backoff(
    webhooks_on: Aws, context: LocalContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = webhooks_on
    monkeypatch.setenv("STEPWISE_WEBHOOK_RETRY_BASE_SECONDS", "2")  # the first retry's delay (a deployment's: 30 s)
    wiring.reset()
    with receiving(answers=[503]) as receiver:
        # Given an endpoint of the tenant, and a run of it
        status, created = register(context, {"url": receiver.url})
        assert status == 200 and created["secret"].startswith("whsec_")
        receiver.secret = created["secret"]
        run_id = json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"]
        # When the run's end is recorded by Finalize
        finalize.handler({"tenant": "default", "run_id": run_id, "status": "SUCCEEDED", "error": None}, context)
        # Then the webhooks function fans it out, and the first attempt (503) is a failure hidden for its backoff
        failures = drain(aws, context)
        (first,) = receiver.wait_for(1)
        assert len(failures) == 1 and first.error is None and first.status == 503
        counts = aws.sqs.get_queue_attributes(QueueUrl=aws.webhooks_queue_url, AttributeNames=["All"])["Attributes"]
        assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")
        # And once its backoff has passed, the next attempt delivers the same event, verified
        time.sleep(2.5)
        assert drain(aws, context) == []
        second = receiver.wait_for(2)[1]
    assert second.error is None and second.status == 200
    assert second.verified["data"] == {"type": "run.succeeded", "id": run_id, "organization_id": "default",
                                       "workspace_id": "default"}  # fmt: skip
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == second.verified["id"]
    emitted = capsys.readouterr().out
    assert '"WebhookDeliveries"' in emitted and '"retrying"' in emitted and '"delivered"' in emitted


def test_the_last_attempt_is_left_to_the_dead_letter_redrive(webhooks_on: Aws, context: LocalContext) -> None:
    aws = webhooks_on
    receiver = WebhookReceiver()
    receiver.reserve_port()  # down
    status, created = register(context, {"url": receiver.url})
    assert status == 200
    SqsWebhookQueue(aws.webhooks_queue_url, aws.sqs).deliver("default", [created["id"]], EVENT)
    (message,) = receive(aws, visibility=0)
    message["Attributes"]["ApproximateReceiveCount"] = "10"  # the tenth receive: its last attempt
    result = webhooks.handler(sqs_event([message]), context)
    assert result["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    # its visibility was not changed: the queue's own timeout passes, and its redrive (maxReceiveCount 10) moves it
    assert len(receive(aws, visibility=0)) == 1


def test_registration_refuses_a_host_not_allowed_and_another_tenant_sees_nothing(
    webhooks_on: Aws, context: LocalContext
) -> None:
    status, refused = register(context, {"url": "https://evil.example.com/hooks"})
    assert status == 400 and refused["error"]["type"] == "invalid_request_error"
    assert "not on this deployment's allow-list" in refused["error"]["message"]
    status, created = register(context, {"url": "http://127.0.0.1:9/hooks"})
    assert status == 200
    for method in ("GET", "DELETE"):  # another tenant's (as its authorizer vouched) is not found
        event = http_event(method, f"/v1/webhooks/{created['id']}")
        event["requestContext"]["authorizer"] = {"lambda": {"tenant": "other"}}
        answer = api.handler(event, context)
        assert answer["statusCode"] == 404 and json.loads(answer["body"])["error"]["type"] == "not_found_error"
    listed = json.loads(api.handler(http_event("GET", "/v1/webhooks"), context)["body"])
    assert [hook["id"] for hook in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]
    shown = json.loads(api.handler(http_event("GET", f"/v1/webhooks/{created['id']}"), context)["body"])
    assert shown == listed["data"][0] and shown["type"] == "webhook" and shown["event_types"] is None


def test_a_deployment_without_an_allow_list_refuses_registrations_and_announces_nothing(
    aws: Aws, context: LocalContext
) -> None:
    status, refused = register(context, {"url": "https://hooks.example.com/in"})
    assert status == 400 and "webhook_allowed_hosts" in refused["error"]["message"]
    assert wiring.notifier(load(ApiSettings)) is None
    run_id = json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"]
    finalize.handler({"tenant": "default", "run_id": run_id, "status": "SUCCEEDED", "error": None}, context)
    assert receive(aws) == []


def test_a_queue_that_refuses_an_announcement_never_fails_the_end(
    webhooks_on: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"]
    monkeypatch.setenv("STEPWISE_WEBHOOKS_QUEUE_URL", webhooks_on.webhooks_queue_url + "-gone")
    wiring.reset()
    done = finalize.handler({"tenant": "default", "run_id": run_id, "status": "SUCCEEDED", "error": None}, context)
    assert done == {"run_id": run_id, "status": "SUCCEEDED"}
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [blob["WebhookAnnounceFailures"] for blob in emitted if "WebhookAnnounceFailures" in blob] == [[1.0]]


def test_the_webhooks_function_reads_its_settings(webhooks_on: Aws) -> None:
    settings = load(WebhooksSettings)
    assert settings.webhook_retry_base_seconds == 30 and settings.webhook_timeout_seconds == 10
    assert wiring.deliveries(settings).endpoints.http_hosts == ("127.0.0.1",)


def execution_ended(run_id: str, status: str, name: str | None = None) -> dict[str, Any]:
    """EventBridge's "Step Functions Execution Status Change" for the run's execution."""
    detail = {"name": name or run_id, "status": status, "error": "States.Timeout", "cause": None,
              "input": json.dumps({"tenant": "default", "run_id": run_id, "step": 1})}  # fmt: skip
    return {"version": "0", "id": "e", "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
            "account": "123456789012", "time": "2026-11-21T14:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}  # fmt: skip


@pytest.mark.parametrize("execution", ["TIMED_OUT", "FAILED"])
def test_an_end_the_last_step_recorded_is_announced_when_the_execution_never_reached_finalize(
    webhooks_on: Aws, context: LocalContext, execution: str
) -> None:
    aws = webhooks_on
    run_id = json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"]
    # Given a run whose last step recorded its end (the step announces nothing: Finalize would have)
    store = wiring.store(load(ApiSettings))
    assert ledger.end_run(store, RunKey("default", run_id), RunStatus.SUCCEEDED, now="2026-11-21T13:00:00.000+00:00")
    # When its execution times out or fails before Finalize ran
    answer = workflow_ended.handler(execution_ended(run_id, execution), context)
    # Then the end is kept, and announced once
    assert answer == {"run_id": run_id, "status": "SUCCEEDED"}
    (message,) = receive(aws)
    data = json.loads(message["Body"])["event"]["data"]
    assert data == {"type": "run.succeeded", "id": run_id, "organization_id": "default", "workspace_id": "default"}


def test_an_execution_stopped_by_a_cancel_announces_nothing_more(webhooks_on: Aws, context: LocalContext) -> None:
    aws = webhooks_on
    run_id = json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"]
    assert api.handler(http_event("POST", f"/runs/{run_id}/cancel"), context)["statusCode"] == 200
    (announced,) = receive(aws, visibility=0)  # the cancel's
    aws.sqs.delete_message(QueueUrl=aws.webhooks_queue_url, ReceiptHandle=announced["ReceiptHandle"])
    workflow_ended.handler(execution_ended(run_id, "ABORTED"), context)
    assert receive(aws) == []


# ------------------------------------------------------------------------------------------- where and how long


def test_a_delivery_connects_only_to_the_address_its_check_resolved() -> None:
    # Given a host the deployment's resolver answers with an allowed address (127.0.0.2), while the system's resolver
    # answers another (localhost: 127.0.0.1, which the deployment does not allow), as a DNS answer that changes
    # between the check and the connection would (DNS rebinding)
    checked = Egress.parse("127.0.0.2", resolver=lambda host, port: ["127.0.0.2"])
    with receiving(secret=new_secret()) as receiver:  # listening on 127.0.0.1 only
        # When a delivery is made to it
        with pytest.raises(WebhookDeliveryError, match="ConnectError"):  # nothing listens on 127.0.0.2
            HttpWebhookSender(egress=checked, hosts=("localhost",), timeout_seconds=5, clock=FixedClock()).send(
                f"http://localhost:{receiver.port}/hooks", "whsec_" + "A" * 44, EVENT["id"], EVENT
            )
        # Then it went to the address that was checked, and nothing reached the one that was not
        time.sleep(0.2)
        assert receiver.deliveries == []


@contextmanager
def dripping(seconds: float) -> Iterator[int]:
    """An endpoint on 127.0.0.1 that reads the request, then answers its head a byte every 0.2 s for ``seconds``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)

    def serve() -> None:
        with suppress(OSError), server.accept()[0] as connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000
            started = time.monotonic()
            for byte in head:
                if time.monotonic() - started > seconds:
                    break
                connection.sendall(bytes([byte]))
                time.sleep(0.2)
            connection.sendall(b"\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(timeout=15)


def test_an_endpoint_that_answers_a_byte_at_a_time_cannot_hold_an_attempt_past_its_deadline() -> None:
    # Given an endpoint that answers each byte of its head well within the per-read timeout, for 8 s
    with dripping(seconds=8) as port:
        started = time.monotonic()
        # When a delivery with a 1 s timeout is made to it
        with pytest.raises(WebhookDeliveryError, match="no answer within 2 s"):
            sender(timeout=1).send(f"http://127.0.0.1:{port}/hooks", new_secret(), EVENT["id"], EVENT)
        # Then the attempt is over at its deadline (twice the timeout), not when the endpoint is done
        assert time.monotonic() - started < 4


def test_https_connects_to_the_checked_address_and_verifies_the_hosts_own_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an https endpoint on 127.0.0.1 whose certificate names "localhost" (signed by a CA the sender trusts)
    cert, key = self_signed("localhost", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    secret, tls = new_secret(), ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with receiving(secret=secret, tls=tls) as receiver:
        # When a delivery is made to https://localhost (resolved and checked once, connected to 127.0.0.1)
        sender(hosts=("localhost",)).send(f"https://localhost:{receiver.port}/hooks", secret, EVENT["id"], EVENT)
        (delivery,) = receiver.wait_for(1)
        # Then TLS named and verified the host (not the address), and the receiver verified the signature
        assert delivery.error is None and delivery.headers["host"] == f"localhost:{receiver.port}"
        # And a certificate for another name is refused
        with pytest.raises(WebhookDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            sender(hosts=("127.0.0.1",)).send(f"https://127.0.0.1:{receiver.port}/hooks", secret, EVENT["id"], EVENT)


def self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert, key_file = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert, key_file
