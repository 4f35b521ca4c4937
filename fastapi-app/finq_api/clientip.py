"""The client's address: X-Forwarded-For is believed only when the direct peer is a trusted
proxy, and only for the hops added by trusted proxies, so a forged header gains nothing."""

import ipaddress
from functools import lru_cache

from fastapi import Request

from finq_core.config import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _trusted(addr: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "unknown"
    networks = trusted_networks(tuple(get_settings().trusted_proxies))
    if not _trusted(peer, networks):
        return peer
    # nginx appends the address it saw; walk from the right past our own proxies. Whatever a
    # client wrote itself stands further left and is never reached while a proxy hop is not.
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer
