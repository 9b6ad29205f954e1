"""Where tools may connect (functions/tools/egress.py): allowed hosts, and never a private, link-local or metadata
address unless the deployment allows it."""

from __future__ import annotations

import pytest

from functions.agent.errors import ToolServerError
from functions.tools.egress import Egress, host_allowed


def resolving(*addresses: str) -> Egress:
    return Egress(resolver=lambda host, port: list(addresses))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_of_an_allowed_host_may_be_reached(address: str) -> None:
    assert resolving(address).check_url("https://docs.example.com/page", ["docs.example.com"]) == (
        "docs.example.com", 443,
    )  # fmt: skip


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1", "fc00::1",
     "::ffff:127.0.0.1", "224.0.0.1", "64:ff9b::a00:1", "::127.0.0.1", "2002:a00:1::1", "192.0.0.192",
     "2001:0:4136:e378:8000:63bf:f5ff:fffe"],
)  # fmt: skip
def test_private_loopback_and_reserved_addresses_are_refused(address: str) -> None:
    with pytest.raises(ToolServerError, match="is private, loopback, link-local or reserved: refused"):
        resolving(address).check_url("http://docs.example.com/", ["docs.example.com"])


def test_a_host_that_resolves_to_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(ToolServerError, match=r"10\.0\.0\.5"):
        resolving("93.184.216.34", "10.0.0.5").check_url("https://docs.example.com/", ["docs.example.com"])


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254"]
)
def test_metadata_services_are_refused_even_inside_an_allowed_range(address: str) -> None:
    egress = Egress.parse("169.254.0.0/16,fd00::/8", resolver=lambda host, port: [address])
    with pytest.raises(ToolServerError, match="instance metadata service"):
        egress.check_url("http://meta.internal/", ["meta.internal"])


def test_a_metadata_address_named_exactly_is_allowed() -> None:
    Egress.parse("169.254.169.254", resolver=lambda h, p: ["169.254.169.254"]).check_url("http://m/", ["m"])


def test_an_ipv4_mapped_address_is_checked_as_the_ipv4_address_it_is() -> None:
    Egress.parse("10.0.0.0/8", resolver=lambda h, p: ["::ffff:10.0.0.5"]).check_url("http://h/", ["h"])
    with pytest.raises(ToolServerError, match="private"):
        Egress(resolver=lambda h, p: ["::ffff:10.0.0.5"]).check_url("http://h/", ["h"])


def test_an_allowed_address_or_range_may_be_reached() -> None:
    egress = Egress.parse("127.0.0.1, 10.0.0.0/8", resolver=lambda host, port: ["127.0.0.1", "10.9.9.9"])
    assert egress.check_url("http://localhost:8080/mcp", ["localhost"]) == ("localhost", 8080)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://docs.example.com/", "is not an http(s) URL"),
        ("file:///etc/passwd", "is not an http(s) URL"),
        ("https://user:pw@docs.example.com/", "URLs with credentials in them are refused"),
        ("https://evil.example.net/", "host 'evil.example.net' is not allowed by this deployment"),
        ("https://docs.example.com.evil.net/", "is not allowed"),
    ],
)
def test_urls_are_refused_by_scheme_credentials_and_host(url: str, problem: str) -> None:
    with pytest.raises(ToolServerError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        resolving("93.184.216.34").check_url(url, ["docs.example.com"])


def test_a_wildcard_allows_subdomains_but_not_the_domain_itself() -> None:
    assert host_allowed("api.example.com", ["*.example.com"])
    assert host_allowed("a.b.example.com", ["*.example.com"])
    assert not host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("badexample.com", ["*.example.com"])
    assert host_allowed("Docs.Example.COM.", ["docs.example.com"])


def test_a_typo_in_the_allowed_addresses_fails_at_once() -> None:
    with pytest.raises(ValueError):
        Egress.parse("10.0.0.0/33")
