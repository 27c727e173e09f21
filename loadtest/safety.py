"""Where load may go: loopback only. Every load, soak and fault run checks its target here."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def loopback_host(host: str | None) -> str:
    """The bare host name of `host` (a name, an address or a URL) if every address it resolves
    to is loopback (127.0.0.0/8, ::1); raises ValueError otherwise."""
    if not host:
        raise ValueError("no host given: pass --host 127.0.0.1")
    name = urlsplit(host).hostname if "://" in host else host.strip("[]")
    if not name:
        raise ValueError(f"cannot read a host name from {host!r}")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {name!r}: {error}") from error
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if outside:
        raise ValueError(f"load tests may only target loopback; {name!r} resolves to {', '.join(outside)}")
    return name
