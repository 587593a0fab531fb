"""Images fetched by URL ({"url": ...} in a JSON body), SSRF-safe.

Off unless FA_URL_ENABLED. Only http(s), only hosts in FA_URL_ALLOWED_HOSTS, no credentials in
the URL, no redirects. The host name is resolved once here and every address it resolves to must
be public (not private, loopback, link-local, multicast, reserved or unspecified) unless
FA_URL_ALLOW_PRIVATE; the connection then goes to that checked address (Host header and TLS SNI
keep the name), so a DNS answer that changes between check and connect cannot point it inside.
The body is streamed with a size cap and the whole fetch has a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from api.errors import InvalidField, PayloadTooLarge, UrlFetchFailed, UrlNotAllowed
from core.settings import UrlFetchSettings


def host_allowed(host: str, allowed: str) -> bool:
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower().rstrip(".") for e in allowed.split(",")):
        if not entry:
            continue
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
        if host == entry:
            return True
    return False


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # is_global: not private, loopback, link-local, reserved, unspecified or shared (100.64/10)
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UrlFetchFailed(f"cannot resolve {host}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


async def pin(parts: SplitResult, allow_private: bool) -> tuple[str, str]:
    """(URL with a checked address in place of the host, Host header): every address the host
    resolves to must be public unless `allow_private`; the caller connects to the address checked
    (send TLS SNI = parts.hostname), so a DNS answer that changes between check and connect
    cannot point inside. UrlFetchFailed if the name does not resolve, UrlNotAllowed if private."""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ips = [ipaddress.ip_address(a.split("%")[0]) for a in await resolve(parts.hostname, port)]
    if not ips or not (allow_private or all(is_public(ip) for ip in ips)):
        raise UrlNotAllowed(f"{parts.hostname} resolves to a private or reserved address")
    ip = ips[0]
    netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), parts.netloc.rsplit("@", 1)[-1]


async def fetch_image(url: str, settings: UrlFetchSettings) -> bytes:
    if not settings.enabled:
        raise UrlNotAllowed("fetching images by URL is switched off on this server (FA_URL_ENABLED)")
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidField("url must be a string of at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField("url must be an http or https URL")
    if parts.username or parts.password:
        raise UrlNotAllowed("credentials in the URL are not accepted")
    host = parts.hostname
    if not host_allowed(host, settings.allowed_hosts):
        raise UrlNotAllowed(f"{host} is not in the allowed hosts (FA_URL_ALLOWED_HOSTS)")
    pinned, host_header = await pin(parts, settings.allow_private)
    headers = {"Host": host_header, "Accept": "image/*"}
    try:
        async with asyncio.timeout(settings.timeout_s):
            async with httpx.AsyncClient(follow_redirects=False, timeout=settings.timeout_s, trust_env=False) as client:
                async with client.stream("GET", pinned, headers=headers,
                                         extensions={"sni_hostname": host}) as r:
                    if r.status_code != 200:
                        raise UrlFetchFailed(f"the URL answered HTTP {r.status_code}")
                    length = r.headers.get("content-length")
                    if length and length.isdigit() and int(length) > settings.max_bytes:
                        raise PayloadTooLarge(f"the image at the URL is larger than {settings.max_bytes} bytes")
                    chunks, size = [], 0
                    async for chunk in r.aiter_bytes():
                        size += len(chunk)
                        if size > settings.max_bytes:
                            raise PayloadTooLarge(f"the image at the URL is larger than {settings.max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
    except TimeoutError:
        raise UrlFetchFailed(f"the URL did not answer within {settings.timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise UrlFetchFailed(f"fetching the URL failed: {type(exc).__name__}") from None
