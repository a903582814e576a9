"""Which address a request comes from, behind reverse proxies we trust.

Sign-in limits, family code limits, the audit log and the request log all key on the
client's address. Behind a reverse proxy every connection comes from the proxy, so
without this every client would share one address (and one client's failures would
pause everyone). ``web.trusted_proxies`` names the proxies: for a connection from one of
them, the client is the right-most address in ``X-Forwarded-For`` that is not itself a
trusted proxy (everything left of it was written by the client and proves nothing).
From any other connection ``X-Forwarded-For`` is ignored, so nobody can claim an
address by sending the header. aiohttp-remotes was considered: its filtered mode reads
the header whoever sends it, and its strict mode refuses direct clients and rewrites
the host and scheme too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from callcenter.web.state import CONFIG

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _address(raw: str) -> Address | None:
    try:
        return ipaddress.ip_address(raw.strip())
    except ValueError:
        return None


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: tuple[str, ...]
) -> str | None:
    """The client's address for a connection from ``peer`` carrying these
    X-Forwarded-For headers, given the trusted proxies."""
    networks = _networks(trusted)
    if peer is None or not _trusted(_address(peer), networks):
        return peer
    client = peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # not written by a proxy of ours: the last proxy is what we know
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


def source_of(address: str | None) -> str:
    """What limits count an address as: itself, or for IPv6 its /64 network (what one
    subscriber is given, so changing the last 64 bits does not make a new source)."""
    parsed = _address(address or "")
    if parsed is None:
        return (address or "?")[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@web.middleware
async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pass the request on with ``remote`` set to the client's address."""
    trusted = request.app[CONFIG].web.trusted_proxies
    if not trusted:
        return await handler(request)
    remote = client_address(
        request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, []), tuple(trusted)
    )
    if remote is None or remote == request.remote:
        return await handler(request)
    return await handler(request.clone(remote=remote))
