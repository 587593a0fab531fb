"""URL fetch rules that need no network: the host allowlist and the address classes refused."""

from __future__ import annotations

import ipaddress

import pytest

from api.url_fetch import host_allowed, is_public


@pytest.mark.parametrize("host, allowed, ok", [
    ("images.example.com", "images.example.com", True),
    ("IMAGES.example.com.", "images.example.com", True),
    ("a.images.example.com", "*.example.com", True),
    ("example.com", "*.example.com", True),
    ("evilexample.com", "*.example.com", False),
    ("example.com.evil.org", "example.com", False),
    ("other.org", "images.example.com, cdn.example.net", False),
    ("cdn.example.net", "images.example.com, cdn.example.net", True),
    ("anything", "", False),
])
def test_host_allowlist(host, allowed, ok):
    assert host_allowed(host, allowed) is ok


@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False),  # cloud metadata
    ("0.0.0.0", False), ("::1", False), ("fe80::1", False), ("fc00::1", False), ("224.0.0.1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("100.64.0.1", False),
])
def test_private_and_reserved_addresses_are_refused(address, public):
    assert is_public(ipaddress.ip_address(address)) is public
