"""A webhook receiver on 127.0.0.1, as a tenant would run one: it verifies every delivery with the
``standardwebhooks`` library before it counts it, and answers with the statuses it is told to."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: str
    status: int  # what the receiver answered
    verified: Any = None  # the payload the library verified, or None
    error: str | None = None  # why it did not verify


@dataclass
class WebhookReceiver:
    """``secret``: the endpoint's (set once it is registered); ``answers``: statuses to answer in turn (then 200)."""

    secret: str | None = None
    answers: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None  # answers https with this context's certificate
    _server: ThreadingHTTPServer | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def reserve_port(self) -> int:
        """A port nothing listens on yet (the receiver is down until ``start``)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        return self.port

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.answers.pop(0) if receiver.answers else 200
                delivery = Delivery(self.path, headers, body, status)
                try:
                    assert receiver.secret is not None, "no secret yet"
                    delivery.verified = Webhook(receiver.secret).verify(body, headers)
                except Exception as exc:  # a delivery that does not verify is recorded as such, and refused
                    delivery.error, delivery.status = f"{type(exc).__name__}: {exc}", 400
                self.send_response(delivery.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._arrived:
                    receiver.deliveries.append(delivery)
                    receiver._arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivery]:
        """The first ``count`` deliveries, once they have arrived (AssertionError after ``timeout`` seconds)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout=timeout):
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries arrived in {timeout} s")
            return list(self.deliveries[:count])


@contextmanager
def receiving(**options: Any) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(**options).start()
    try:
        yield receiver
    finally:
        receiver.stop()
