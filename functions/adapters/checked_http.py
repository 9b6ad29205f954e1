"""httpcore's socket backend held to the deployment's egress rules and to one deadline: what a webhook delivery
(functions/adapters/webhook_delivery.py) connects through.

* Where: the host is resolved once, every address it resolves to is checked (functions/tools/egress.py), and the
  connection is made to a checked address, so a DNS answer that changes between the check and the connection (DNS
  rebinding) cannot lead it to a private or metadata address. TLS still names and verifies the host itself.
* How long: every connect, TLS handshake, read and write waits at most its own timeout and never past the deadline,
  so an endpoint that answers a byte at a time cannot hold an attempt (and the batch it is in) for longer.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore2

from functions.tools.egress import Egress


@dataclass(frozen=True)
class Deadline:
    """When an attempt is over (on the ``monotonic`` clock)."""

    at: float
    monotonic: Callable[[], float]

    def left(self, timeout: float | None, expired: type[Exception]) -> float:
        """The wait an operation may have: its own ``timeout``, cut to what is left; ``expired`` when nothing is."""
        left = self.at - self.monotonic()
        if left <= 0:
            raise expired("the attempt's time is up")
        return left if timeout is None else min(timeout, left)


class CheckedBackend(httpcore2.SyncBackend):
    def __init__(self, egress: Egress, deadline: Deadline) -> None:
        self.egress, self.deadline = egress, deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        """Raises ToolServerError (the host resolves to an address the deployment does not allow, or to none), or
        httpcore's ConnectError and ConnectTimeout."""
        addresses = self.egress.resolver(host, port)
        for address in addresses:  # every one, before any connection: one refused address refuses the host
            self.egress.check_address(address)
        failure: Exception = httpcore2.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                stream = super().connect_tcp(
                    address, port, timeout=self.deadline.left(timeout, httpcore2.ConnectTimeout),
                    local_address=local_address, socket_options=socket_options,
                )  # fmt: skip
            except httpcore2.ConnectError as exc:  # the next address, as socket.create_connection would
                failure = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise failure


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream, deadline: Deadline) -> None:
        self.stream, self.deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.deadline.left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self.deadline.left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        wait = self.deadline.left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, wait), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)
