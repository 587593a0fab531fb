"""The Triton address forms the API's channel and `export publish` accept."""

import pytest

from api.triton_targets import is_multi, replica_addresses


def test_one_address():
    assert replica_addresses("127.0.0.1:8001") == ["127.0.0.1:8001"]
    assert not is_multi("triton:8001")


def test_static_lists_in_grpc_and_plain_form():
    both = ["127.0.0.1:8001", "127.0.0.2:8001"]
    assert replica_addresses("ipv4:127.0.0.2:8001,127.0.0.1:8001") == both
    assert replica_addresses("127.0.0.1:8001, 127.0.0.2:8001") == both
    assert is_multi("ipv4:127.0.0.1:8001") and is_multi("a:1,b:2")


def test_dns_names_every_address_the_name_resolves_to():
    addresses = replica_addresses("dns:///localhost:8001")
    assert "127.0.0.1:8001" in addresses
    assert all(a.endswith(":8001") for a in addresses)
    assert replica_addresses("dns://8.8.8.8/localhost:8001") == addresses  # authority ignored
    assert is_multi("dns:///triton.face-analytics.svc.cluster.local:8001")


@pytest.mark.parametrize("bad", ["triton", "ipv4:127.0.0.1", "dns:///triton"])
def test_an_address_without_port_is_refused(bad):
    with pytest.raises(ValueError):
        replica_addresses(bad)
