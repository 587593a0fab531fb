"""Which Triton replicas an address names: one place for the gRPC target syntax we accept.

    host:port                   one Triton
    dns:///name:port            every address the name resolves to (a headless Service lists
                                each ready pod), as gRPC's own DNS resolver sees them
    ipv4:a:port,b:port          a fixed list, gRPC's ipv4 scheme (also accepted as a:port,b:port)

The API's gRPC channel takes the same string (gRPC resolves and balances it); publishing a
model and /health's version report need each replica on its own, hence this expansion.
"""

from __future__ import annotations

import socket


def _split_host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {hostport!r}")
    return host.strip("[]"), int(port)


def replica_addresses(url: str) -> list[str]:
    """host:port of every replica `url` names, sorted; DNS is resolved now."""
    url = url.strip()
    if url.startswith("dns:"):
        # dns:///name:port or dns://authority/name:port (the authority is ignored)
        name = url[len("dns:"):].lstrip("/")
        if "/" in name:
            name = name.split("/", 1)[1]
        host, port = _split_host_port(name)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = {f"[{i[4][0]}]:{port}" if ":" in i[4][0] else f"{i[4][0]}:{port}" for i in infos}
        return sorted(addrs)
    if url.startswith(("ipv4:", "ipv6:")):
        url = url.split(":", 1)[1]
    parts = [p.strip() for p in url.split(",") if p.strip()]
    for p in parts:
        _split_host_port(p)
    return sorted(set(parts))


def is_multi(url: str) -> bool:
    """True when `url` may name more than one replica (a resolver scheme or a list)."""
    return url.startswith(("dns:", "ipv4:", "ipv6:")) or "," in url
