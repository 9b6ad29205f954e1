"""Where tools may connect: the deployment's allowed hosts, and never a private, link-local or metadata address
unless the deployment allows that address explicitly (the local stack allows 127.0.0.1).

Every address a host resolves to is checked before connecting. The check and the connection resolve the name
separately, so a DNS answer that changes in between (rebinding) is not caught here: allow only hosts you control.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from functions.agent.errors import ToolServerError
from functions.agent.hosts import host_allowed

__all__ = ["METADATA", "Egress", "host_allowed", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The instance metadata services (EC2 IMDS, ECS task metadata, their IPv6 forms): refused even when a range that
# holds them is allowed, unless named exactly
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23")
)
Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolServerError(f"cannot resolve {host!r}: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Egress:
    """``allow_addresses``: addresses or CIDR ranges allowed though not public (e.g. "127.0.0.1", "10.0.0.0/8")."""

    allow_addresses: tuple[str, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False)

    @classmethod
    def parse(cls, text: str | None, resolver: Resolver = resolve) -> Egress:
        items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
        for item in items:
            ipaddress.ip_network(item, strict=False)  # a typo fails the function's settings, not a call
        return cls(items, resolver)

    @property
    def _networks(self) -> list[Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.allow_addresses]

    def check_address(self, text: str) -> None:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            self.check_address(str(address.ipv4_mapped))  # the IPv4 address it is, and nothing else
            return
        for embedded in _embedded_ipv4(address):  # an IPv4 address reached through an IPv6 one is checked as itself
            self.check_address(str(embedded))
        if address in METADATA:
            if not any(network.num_addresses == 1 and address in network for network in self._networks):
                raise ToolServerError(f"address {address} is an instance metadata service: refused")
            return
        if address.is_global and not address.is_multicast and not any(address in n for n in NOT_GLOBAL):
            return
        if not any(address in network for network in self._networks):
            raise ToolServerError(
                f"address {address} is private, loopback, link-local or reserved: refused (a deployment may allow "
                "it: egress_allow_addresses)"
            )

    def check_url(self, url: str, hosts: Iterable[str]) -> tuple[str, int]:
        """Raise ToolServerError unless ``url`` is http(s), its host is one of ``hosts`` (exact, or ``*.domain``
        for any subdomain), and every address it resolves to may be reached. Returns (host, port)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolServerError(f"{url[:200]!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ToolServerError("URLs with credentials in them are refused")
        host = parts.hostname.lower().rstrip(".")
        if not host_allowed(host, hosts):
            raise ToolServerError(f"host {host!r} is not allowed by this deployment")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for address in self.resolver(host, port):
            self.check_address(address)
        return host, port


NAT64 = ipaddress.ip_network("64:ff9b::/96")
# special-purpose ranges Python 3.11 still calls global (3.13 does not): refused the same on both
NOT_GLOBAL = tuple(
    ipaddress.ip_network(n) for n in ("192.0.0.0/24", "2001::/23", "2002::/16", "64:ff9b:1::/48", "64:ff9b::/96")
)
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, 6to4, Teredo (server and client), NAT64, compatible."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo:
        found += list(address.teredo)
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
