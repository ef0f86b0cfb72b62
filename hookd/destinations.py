"""Which network destinations hookd may connect to: the SSRF guard's address policy. Pure.

By default only globally routable unicast addresses are allowed. Refused: loopback, private
(RFC 1918), link-local (169.254.0.0/16, including the 169.254.169.254 metadata address), shared
address space / CGNAT (100.64.0.0/10, RFC 6598), multicast, unspecified, broadcast, reserved and
documentation ranges (Python's `ipaddress` `is_global`, from the IANA special-purpose registries),
IPv6 loopback, unique-local (fc00::/7), link-local (fe80::/10) and site-local (fec0::/10), and
every IPv6 form that embeds an IPv4 address: IPv4-mapped (::ffff:0:0/96), IPv4-compatible
(::/96), NAT64 (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16, RFC 3056). IP literals are recognised
in every spelling a client would connect to: legacy IPv4 forms (decimal, octal, hex, shortened)
and non-ASCII forms that IDNA maps onto them. An operator opens internal targets on purpose with an
allow-list of CIDRs and host names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable

try:  # the IDNA 2008 / UTS 46 mapping yarl (so aiohttp) applies to non-ASCII host names
    import idna as _idna
except ImportError:  # pragma: no cover - aiohttp depends on yarl, which depends on idna
    _idna = None  # type: ignore[assignment]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSED_REASON = "refused by the SSRF guard"
"""How every refusal's message starts (and the attempt log's reason for the refusal)."""

_EMBEDDED_V4_KINDS = {
    ipaddress.ip_network("::ffff:0:0/96"): "an IPv4-mapped IPv6 address",
    ipaddress.ip_network("::/96"): "an IPv4-compatible IPv6 address",
    ipaddress.ip_network("64:ff9b::/96"): "a NAT64 address (RFC 6052)",
    ipaddress.ip_network("64:ff9b:1::/48"): "a NAT64 address (RFC 8215)",
    ipaddress.ip_network("2002::/16"): "a 6to4 address (RFC 3056)",
}
_EMBEDDED_V4 = tuple(_EMBEDDED_V4_KINDS)
# Host spellings that inet_aton (and so the C resolver) reads as IPv4: decimal, octal, hex and
# shortened forms such as 2130706433, 0177.0.0.1, 0x7f.1 and 0.
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)

_METADATA = frozenset(
    # AWS, GCP, Azure, OpenStack and others answer on the first; AWS also on the IPv6 one.
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254")
)
_KINDS: tuple[tuple[str, str], ...] = (
    # (network, what it is), most specific first; the metadata, loopback, link-local and
    # multicast cases are caught by the address's own properties before these.
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a shared address (CGNAT, RFC 6598)"),
    ("fc00::/7", "a unique-local address (RFC 4193)"),
    ("fec0::/10", "a site-local address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("2001:db8::/32", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address (RFC 2544)"),
)
_KIND_NETS = tuple((ipaddress.ip_network(n), kind) for n, kind in _KINDS)


def address_kind(addr: IPAddress) -> str:
    """What kind of internal address `addr` is, as a noun phrase ("a loopback address").

    For an address the guard refuses; a global address gives "a reserved address".
    """
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr in _METADATA:
        return "the cloud metadata address (link-local)"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if isinstance(addr, ipaddress.IPv6Address):
        for net, kind in _EMBEDDED_V4_KINDS.items():
            if addr in net:
                return kind
    for net, kind in _KIND_NETS:
        if net.version == addr.version and addr in net:
            return kind
    return "a reserved address"


class DestinationRefused(OSError):
    """The SSRF guard refused a destination address.

    `address` is the refused address; `host` the name that resolved to it (None when the URL's
    host is the address itself). The message, the one text every surface shows (attempt log,
    `hookd endpoint add`, the API), names the guard, the kind of address and the settings that
    open it (`security.allow_cidrs`, `security.allow_hosts`).
    """

    def __init__(self, address: IPAddress | str, host: str | None = None) -> None:
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        self.address = addr
        self.host = host
        kind = address_kind(addr)
        what = f"{addr} is {kind}" if host is None else f"{host} resolves to {addr}, {kind}"
        super().__init__(
            f"{REFUSED_REASON}: {what} (allow it with security.allow_cidrs, e.g. "
            f'"{addr}/{addr.max_prefixlen}", or the host with security.allow_hosts)'
        )


# Dots that IDNA processing turns into "." (UTS 46 and RFC 3490 section 3.1).
_DOT_LIKE = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def _ascii_spellings(host: str) -> list[str]:
    """`host`, and for a non-ASCII host the ASCII forms IDNA processing gives it.

    HTTP clients apply IDNA before they connect: yarl turns fullwidth digits (U+FF10-U+FF19) and
    ideographic full stops (U+3002) into "127.0.0.1" and then connects to that literal without
    any name lookup, so the guard must see every such form.
    """
    if host.isascii():
        return [host]
    forms = [unicodedata.normalize("NFKC", host).translate(_DOT_LIKE)]
    with contextlib.suppress(UnicodeError):
        forms.append(host.encode("idna").decode("ascii"))
    if _idna is not None:
        with contextlib.suppress(UnicodeError):  # idna.IDNAError is a UnicodeError
            forms.append(_idna.encode(host, uts46=True).decode("ascii"))
    return forms


def _literal(h: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_V4.match(h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h.rstrip(".")))
        except OSError:
            return None
    return None


def literal_addresses(host: str) -> list[IPAddress]:
    """Every address a URL host can denote as an IP literal, in any spelling (usually 0 or 1).

    Understands bracketed or bare IPv6, the legacy IPv4 spellings resolvers accept, and non-ASCII
    spellings that IDNA maps onto either.
    """
    found = []
    for form in _ascii_spellings(host):
        addr = _literal(form.strip("[]"))
        if addr is not None and addr not in found:
            found.append(addr)
    return found


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host denotes if it is an IP literal in any spelling, else None."""
    found = literal_addresses(host)
    return found[0] if found else None


class DestinationPolicy:
    """Decides whether an address or host name may be connected to.

    `allow_cidrs` (e.g. "10.1.2.0/24", "127.0.0.0/8", "::1/128") and `allow_hosts` (exact host
    names, or "*.example.internal" for subdomains) open internal targets on purpose. With
    `enabled` False every destination is allowed.

    Raises ValueError for a malformed CIDR.
    """

    def __init__(
        self, allow_cidrs: Iterable[str] = (), allow_hosts: Iterable[str] = (), enabled: bool = True
    ) -> None:
        self.enabled = enabled
        self._nets = [ipaddress.ip_network(c, strict=False) for c in allow_cidrs]
        hosts = [h.lower().rstrip(".") for h in allow_hosts]
        self._hosts = {h for h in hosts if not h.startswith("*.")}
        self._suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def host_allowed(self, host: str) -> bool:
        """True if the host name is on the allow-list (its addresses are then not checked)."""
        h = host.lower().rstrip(".")
        return not self.enabled or h in self._hosts or h.endswith(self._suffixes or ("\0",))

    def address_allowed(self, addr: IPAddress) -> bool:
        """True if `addr` is a permitted destination."""
        if not self.enabled or any(addr in n for n in self._nets if n.version == addr.version):
            return True
        if addr.is_multicast or not addr.is_global:
            return False
        if isinstance(addr, ipaddress.IPv6Address):
            # Site-local fec0::/10 (deprecated by RFC 3879, still routed inside some networks) is
            # "global" to Python's ipaddress.
            return not addr.is_site_local and not any(addr in n for n in _EMBEDDED_V4)
        return True

    def check_host(self, host: str) -> None:
        """Refuse a URL host that is a disallowed IP literal (any spelling).

        Raises:
            DestinationRefused: naming the address and its kind.
        """
        if self.host_allowed(host):
            return
        for addr in literal_addresses(host):
            if not self.address_allowed(addr):
                raise DestinationRefused(addr)

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """Refuse a host if any address it resolved to is disallowed.

        Raises:
            DestinationRefused: naming the host, the first refused address and its kind.
        """
        if self.host_allowed(host):
            return
        for a in addresses:
            addr = ipaddress.ip_address(a.split("%", 1)[0])
            if not self.address_allowed(addr):
                raise DestinationRefused(addr, host)
