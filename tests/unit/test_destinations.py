# ruff: noqa: RUF001 (full-width digits and dots in host names are the point of some cases)
"""Unit tests for hookd.destinations: the SSRF guard's address policy (issue 4, point 4).

Pure: no address here is ever connected to. The integration tests (test_security_ssrf.py) show the
same policy holding on real sockets, with canaries on loopback.
"""

from __future__ import annotations

import ipaddress

import pytest

from hookd.destinations import (
    REFUSED_REASON,
    DestinationPolicy,
    DestinationRefused,
    literal_address,
)

GUARD = DestinationPolicy()

REFUSED = {
    # IPv4
    "loopback": "127.0.0.1",
    "loopback, top of 127/8": "127.255.255.254",
    "RFC 1918 10/8": "10.0.0.1",
    "RFC 1918 10/8, top": "10.255.255.255",
    "RFC 1918 172.16/12": "172.16.0.1",
    "RFC 1918 172.16/12, top": "172.31.255.255",
    "RFC 1918 192.168/16": "192.168.1.1",
    "link-local": "169.254.1.1",
    "cloud metadata": "169.254.169.254",
    "CGNAT 100.64/10": "100.64.0.1",
    "CGNAT 100.64/10, top": "100.127.255.255",
    "multicast": "224.0.0.1",
    "multicast, SSDP": "239.255.255.250",
    "broadcast": "255.255.255.255",
    "unspecified": "0.0.0.0",
    "this network 0/8": "0.1.2.3",
    "reserved 240/4": "240.0.0.1",
    "IETF protocol assignments": "192.0.0.1",
    "documentation TEST-NET-1": "192.0.2.1",
    "benchmarking": "198.18.0.1",
    # IPv6
    "IPv6 loopback": "::1",
    "IPv6 unspecified": "::",
    "unique-local fc00::/7": "fc00::1",
    "unique-local fd00::/8": "fd12:3456:789a::1",
    "link-local fe80::/10": "fe80::1",
    "link-local fe80::/10, top": "febf:ffff::1",
    "site-local fec0::/10": "fec0::1",
    "IPv6 multicast": "ff02::1",
    "IPv6 global multicast": "ff0e::1",
    "IPv6 documentation": "2001:db8::1",
    "Teredo": "2001::1",
    "discard-only": "100::1",
    # IPv4 embedded in IPv6: refused even when the IPv4 address is public
    "IPv4-mapped loopback": "::ffff:127.0.0.1",
    "IPv4-mapped metadata": "::ffff:169.254.169.254",
    "IPv4-mapped public": "::ffff:8.8.8.8",
    "IPv4-compatible loopback": "::127.0.0.1",
    "IPv4-compatible public": "::8.8.8.8",
    "NAT64 loopback": "64:ff9b::7f00:1",
    "NAT64 public": "64:ff9b::808:808",
    "NAT64 local-use": "64:ff9b:1::a00:1",
    "6to4 loopback": "2002:7f00:1::",
    "6to4 public": "2002:808:808::1",
}

ALLOWED = {
    "public v4": "8.8.8.8",
    "public v4, 1.1.1.1": "1.1.1.1",
    "just above 172.16/12": "172.32.0.1",
    "just below 172.16/12": "172.15.255.255",
    "just above CGNAT": "100.128.0.1",
    "just below CGNAT": "100.63.255.255",
    "just below 10/8": "9.255.255.255",
    "just above 10/8": "11.0.0.1",
    "public v6": "2606:4700:4700::1111",
    "public v6, Google": "2001:4860:4860::8888",
    "public v6, 2a00": "2a00:1450:4001::1",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_internal_addresses_are_refused(case: str) -> None:
    addr = ipaddress.ip_address(REFUSED[case])
    assert GUARD.address_allowed(addr) is False
    with pytest.raises(DestinationRefused, match=f"^{REFUSED_REASON}: "):
        GUARD.check_addresses("host.example", [str(addr)])


@pytest.mark.parametrize("case", list(ALLOWED))
def test_globally_routable_addresses_are_allowed(case: str) -> None:
    addr = ipaddress.ip_address(ALLOWED[case])
    assert GUARD.address_allowed(addr) is True
    GUARD.check_addresses("host.example", [str(addr)])
    GUARD.check_host(str(addr) if addr.version == 4 else f"[{addr}]")


def test_one_internal_answer_among_public_ones_refuses_the_host() -> None:
    with pytest.raises(DestinationRefused, match=r"rebind\.example resolves to 10\.0\.0\.1"):
        GUARD.check_addresses("rebind.example", ["8.8.8.8", "10.0.0.1", "1.1.1.1"])


def test_scoped_ipv6_answer_is_checked_without_its_zone() -> None:
    with pytest.raises(DestinationRefused, match="fe80::1"):
        GUARD.check_addresses("h.example", ["fe80::1%2"])


# -- literal spellings --------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",  # decimal
    "0177.0.0.1",  # octal
    "0x7f.0.0.1",  # hex
    "0X7F.0.0.1",
    "0x7f000001",
    "017700000001",
    "127.1",  # shortened
    "0x7f.1",
    "127.0.0.1.",  # trailing dot
    "127.000.000.001",
    "１２７.０.０.１",  # fullwidth digits: IDNA maps them to ASCII before connecting
    "127。0。0。1",  # ideographic full stops
    "127｡0｡0｡1",  # halfwidth ideographic full stops
    "１２７．０．０．１",  # fullwidth full stops
    "𝟏𝟐𝟕.0.0.1",  # mathematical bold digits
    "①②⑦.0.0.1",  # circled digits
    "127\u20240.0.1",  # one dot leader (the stdlib IDNA codec maps it to ".")
    "２１３０７０６４３３",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_caught(host: str) -> None:
    assert literal_address(host) == ipaddress.IPv4Address("127.0.0.1")
    with pytest.raises(DestinationRefused, match=r": 127\.0\.0\.1 is a loopback address "):
        GUARD.check_host(host)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("0", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("[0:0:0:0:0:ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1"),
        ("[64:ff9b::127.0.0.1]", "64:ff9b::7f00:1"),
        ("[2002:7f00:1::]", "2002:7f00:1::"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("［::1］", "::1"),  # fullwidth brackets
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("0xa000001", "10.0.0.1"),
    ],
)
def test_literals_in_any_spelling_are_refused(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)
    with pytest.raises(DestinationRefused, match=f"^{REFUSED_REASON}: "):
        GUARD.check_host(host)


@pytest.mark.parametrize(
    "host",
    ["example.com", "localhost", "1.2.3.4.5", "999.1.1.1", "08.0.0.1", "0x", "münchen.de", "a.b"],
)
def test_names_are_not_literals(host: str) -> None:
    # Names are resolved, and every address they resolve to is checked (GuardedResolver).
    assert literal_address(host) is None
    GUARD.check_host(host)


def test_public_literals_pass_check_host() -> None:
    for host in (
        "8.8.8.8",
        "134744072",
        "0x8.0x8.0x8.0x8",
        "[2606:4700:4700::1111]",
        "８.８.８.８",
    ):
        GUARD.check_host(host)


# -- the allow-list -----------------------------------------------------------------------------


def test_allow_cidrs_open_exactly_what_they_list() -> None:
    policy = DestinationPolicy(allow_cidrs=["127.0.0.2/32", "10.1.0.0/16", "fd00:1::/64"])
    ip = ipaddress.ip_address
    assert policy.address_allowed(ip("127.0.0.2"))
    assert policy.address_allowed(ip("10.1.255.255"))
    assert policy.address_allowed(ip("fd00:1::5"))
    for refused in (
        "127.0.0.1",
        "127.0.0.3",
        "10.2.0.1",
        "10.0.255.255",
        "fd00:2::5",
        "::ffff:127.0.0.2",  # the IPv4-mapped form is not the listed IPv4 range
        "169.254.169.254",
        "::1",
    ):
        assert not policy.address_allowed(ip(refused)), refused
    policy.check_host("127.0.0.2")
    policy.check_host("0x7f.0.0.2")
    with pytest.raises(DestinationRefused):
        policy.check_host("127.0.0.1")
    assert policy.address_allowed(ip("8.8.8.8")), "the allow-list adds; public stays allowed"


def test_allow_hosts_exact_and_subdomains() -> None:
    policy = DestinationPolicy(allow_hosts=["hooks.internal", "*.corp.example"])
    for host in (
        "hooks.internal",
        "HOOKS.INTERNAL",
        "hooks.internal.",
        "a.corp.example",
        "a.b.corp.example",
    ):
        assert policy.host_allowed(host), host
        policy.check_addresses(host, ["10.0.0.1"])
    for host in ("corp.example", "xhooks.internal", "hooks.internal.evil", "acorp.example", "x.y"):
        assert not policy.host_allowed(host), host
        with pytest.raises(DestinationRefused):
            policy.check_addresses(host, ["10.0.0.1"])


def test_no_allow_hosts_matches_nothing() -> None:
    assert not GUARD.host_allowed("")
    assert not GUARD.host_allowed("localhost")


def test_disabled_guard_allows_everything() -> None:
    off = DestinationPolicy(enabled=False)
    assert off.address_allowed(ipaddress.ip_address("127.0.0.1"))
    off.check_host("127.0.0.1")
    off.check_addresses("x", ["169.254.169.254"])


def test_malformed_cidr_is_refused() -> None:
    with pytest.raises(ValueError):
        DestinationPolicy(allow_cidrs=["10.0.0.0/33"])
    with pytest.raises(ValueError):
        DestinationPolicy(allow_cidrs=["not-a-network"])


def test_refusal_message_starts_with_the_recorded_reason() -> None:
    exc = DestinationRefused("127.0.0.1")
    assert str(exc).startswith(f"{REFUSED_REASON}: 127.0.0.1 is a loopback address (")
    assert REFUSED_REASON == "refused by the SSRF guard"
    assert isinstance(exc, OSError)


# -- what a refusal says -------------------------------------------------------------------------

_HINT = "(allow it with security.allow_cidrs, e.g. {cidr}, or the host with security.allow_hosts)"

KINDS = {
    "127.0.0.1": "a loopback address",
    "::1": "a loopback address",
    "0.0.0.0": "the unspecified address",
    "::": "the unspecified address",
    "10.1.2.3": "a private address (RFC 1918)",
    "172.16.0.1": "a private address (RFC 1918)",
    "192.168.1.1": "a private address (RFC 1918)",
    "169.254.169.254": "the cloud metadata address (link-local)",
    "fd00:ec2::254": "the cloud metadata address (link-local)",
    "169.254.1.1": "a link-local address",
    "fe80::1": "a link-local address",
    "100.64.0.1": "a shared address (CGNAT, RFC 6598)",
    "224.0.0.1": "a multicast address",
    "ff02::1": "a multicast address",
    "fc00::1": "a unique-local address (RFC 4193)",
    "fec0::1": "a site-local address",
    "::ffff:7f00:1": "an IPv4-mapped IPv6 address",
    "64:ff9b::a00:1": "a NAT64 address (RFC 6052)",
    "2002:7f00:1::": "a 6to4 address (RFC 3056)",
    "255.255.255.255": "the broadcast address",
    "192.0.2.1": "a documentation address",
    "2001:db8::1": "a documentation address",
    "198.18.0.1": "a benchmarking address (RFC 2544)",
    "240.0.0.1": "a reserved address",
}


@pytest.mark.parametrize("address", list(KINDS))
def test_a_refusal_names_the_guard_the_kind_of_address_and_the_settings(address: str) -> None:
    addr = ipaddress.ip_address(address)
    host = str(addr) if addr.version == 4 else f"[{addr}]"
    cidr = f'"{addr}/{addr.max_prefixlen}"'
    with pytest.raises(DestinationRefused) as literal:
        GUARD.check_host(host)
    assert str(literal.value) == (
        f"refused by the SSRF guard: {addr} is {KINDS[address]} " + _HINT.format(cidr=cidr)
    )
    with pytest.raises(DestinationRefused) as resolved:
        GUARD.check_addresses("internal.example", ["8.8.8.8", address])
    assert str(resolved.value) == (
        f"refused by the SSRF guard: internal.example resolves to {addr}, {KINDS[address]} "
        + _HINT.format(cidr=cidr)
    )
    assert resolved.value.address == addr and resolved.value.host == "internal.example"


def test_the_settings_a_refusal_names_do_open_the_destination() -> None:
    """The advice in the message is right: the CIDR it suggests, or the host, lets it through."""
    with pytest.raises(DestinationRefused) as info:
        GUARD.check_addresses("localhost", ["127.0.0.1"])
    cidr = str(info.value).split('e.g. "', 1)[1].split('"', 1)[0]
    DestinationPolicy(allow_cidrs=[cidr]).check_addresses("localhost", ["127.0.0.1"])
    DestinationPolicy(allow_hosts=["localhost"]).check_addresses("localhost", ["127.0.0.1"])
