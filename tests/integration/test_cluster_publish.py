"""Two Triton replicas sharing one model repository, as Triton pods share the volume in
deploy/k8s: publish reaches both before the old version goes, requests balanced per request
over both never fail during the switch, /health reports the skew while one replica lags,
and the model-control API needs the admin header, with Triton's flags taken from the
Kubernetes manifest itself."""

from __future__ import annotations

import asyncio
import re

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from api.inference import InferenceClient
from core.settings import SHARED_DATA
from export import publish
from pipeline import contract as C
from tests.conftest import make_settings
from tests.integration.test_model_promotion import _variant
from tests.integration.test_pipeline_triton import _inputs
from tests.unit.test_kubernetes import render, triton_container
from tools.triton_local import free_port

pytestmark = pytest.mark.triton

ADMIN_KEY = "test-admin-key"
ADMIN = {"triton-admin-key": ADMIN_KEY}


def _restricted_flags() -> tuple[str, ...]:
    """Triton's model-control restriction exactly as the gpu overlay starts it."""
    args = triton_container(render("overlays/gpu"))["args"]
    flags = tuple(a.replace("$(TRITON_ADMIN_KEY)", ADMIN_KEY) for a in args if "restricted" in a)
    assert len(flags) == 2, args
    return flags


@pytest.fixture(scope="module")
def replicas(built_models, tmp_path_factory):
    """Two tritonservers on 127.0.0.1 and 127.0.0.2 with the same ports and one repository,
    from a registry of their own (the versions registered here must not shift the session
    registry's numbering that other tests rely on)."""
    from export.bootstrap import register
    from export.registry import Registry
    from tools.triton_local import TritonServer

    root = tmp_path_factory.mktemp("cluster")
    repo = root / "model_repository"
    registry = Registry(make_settings(root / "var", repo))
    register(registry, built_models, progress=lambda m: None)
    publish.write_repository(registry, repo, progress=lambda m: None)
    ports = dict(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    servers = [TritonServer(repository=repo, host=host, work_dir=root / host, log_file=root / f"{host}.log",
                            extra_args=_restricted_flags(), **ports)
               for host in ("127.0.0.1", "127.0.0.2")]
    for s in servers:  # both load their models at the same time
        s.launch()
    try:
        for s in servers:
            s.wait_ready(240)
        photo = (SHARED_DATA / "verification" / "images" / "Joe_Biden" / "biden.jpg").read_bytes()
        for s in servers:  # the first request of a fresh server is slow; not under test here
            client = grpcclient.InferenceServerClient(s.grpc_url)
            client.infer(C.PIPELINE, _inputs(photo), client_timeout=180)
            client.close()
        yield servers, repo, registry
    finally:
        for s in servers:
            s.stop()


async def _health_until(api, skew: bool, timeout_s: float = 60) -> dict:
    """/health answers from a short per-worker cache: ask until it reflects the new state."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        health = (await api.get("/health")).json()
        if health["version_skew"] is skew or asyncio.get_running_loop().time() > deadline:
            assert health["version_skew"] is skew, health
            return health
        await asyncio.sleep(0.5)


def _serves(address: str, name: str, version: int) -> bool:
    c = httpclient.InferenceServerClient(address)
    try:
        return c.is_model_ready(name, str(version))
    finally:
        c.close()


def _pipeline_requests(address: str) -> int:
    c = httpclient.InferenceServerClient(address)
    try:
        stats = c.get_inference_statistics(C.PIPELINE)["model_stats"]
        return sum(int(m["inference_stats"]["success"]["count"]) for m in stats)
    finally:
        c.close()


async def test_publish_reaches_every_replica_before_the_old_version_goes(
        replicas, built_models, shared_data, tmp_path):
    from tests.integration.conftest import api_settings, running_api

    servers, repo, registry = replicas
    a, b = servers
    http_all = f"{a.http_url},{b.http_url}"
    old = registry.production(C.MULTITASK).version
    new = registry.log_onnx(C.MULTITASK, _variant(built_models[C.MULTITASK], tmp_path / "mt.onnx", "cluster"),
                            {"purpose": "multi-replica publish test"}).version
    versions = {C.MULTITASK: new}

    # the API's own client: one channel over both replicas, round robin per request
    base = make_settings(tmp_path / "var", repo)
    triton = base.triton.model_copy(update={
        "grpc_url": f"ipv4:{a.grpc_url},{b.grpc_url}", "grpc_lb_policy": "round_robin"})
    settings = api_settings(base.model_copy(update={"triton": triton}), tmp_path, "sqlite")
    photo = (shared_data / "verification" / "images" / "Joe_Biden" / "biden.jpg").read_bytes()
    inference = InferenceClient(settings.triton)
    ok, errors, stop = [0], [], asyncio.Event()

    async def traffic():
        while not stop.is_set():
            try:
                assert len((await inference.analyze(photo)).faces) == 1
                ok[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                errors.append(repr(exc))

    before = {s.http_url: _pipeline_requests(s.http_url) for s in servers}
    senders = [asyncio.create_task(traffic()) for _ in range(2)]
    try:
        # per-request balancing: both replicas answer requests of the one channel (counted
        # before the publish: a reload starts a model's statistics afresh)
        deadline = asyncio.get_running_loop().time() + 180
        while not all(_pipeline_requests(s.http_url) > before[s.http_url] for s in servers):
            assert asyncio.get_running_loop().time() < deadline, "one replica got no request"
            await asyncio.sleep(0.5)
        async with running_api(settings) as api:
            published = publish.write_repository(registry, repo, versions=versions, progress=lambda m: None)
            # one replica only: the other still serves the old version, /health says so
            await asyncio.to_thread(publish.load_into_triton, a.http_url, published, repo,
                                    progress=lambda m: None, headers=ADMIN, timeout_s=600, prune=False)
            assert (repo / C.MULTITASK / str(old)).exists()
            health = await _health_until(api, skew=True)
            assert health["replicas"][a.grpc_url][C.MULTITASK] == str(new)
            assert health["replicas"][b.grpc_url][C.MULTITASK] == str(old)

            # every replica: both serve the new version, the old directory goes only then
            assert await asyncio.to_thread(publish.load_into_triton, http_all, published, repo,
                                           progress=lambda m: None, headers=ADMIN, timeout_s=600)
            for s in servers:
                assert _serves(s.http_url, C.MULTITASK, new) and not _serves(s.http_url, C.MULTITASK, old)
            assert not (repo / C.MULTITASK / str(old)).exists()
            health = await _health_until(api, skew=False)
            assert {r[C.MULTITASK] for r in health["replicas"].values()} == {str(new)}
            await asyncio.sleep(1)  # a few more requests on the new version
    finally:
        stop.set()
        await asyncio.gather(*senders)
        await inference.close()
    assert errors == [], errors[:3]
    assert ok[0] > 0

    # a replica that does not answer: the publish fails and the served version stays on disk
    rollback = publish.write_repository(registry, repo, versions={C.MULTITASK: old}, progress=lambda m: None)
    dead = f"127.0.0.3:{free_port()}"
    with pytest.raises(RuntimeError, match="does not answer"):
        publish.load_into_triton(f"{http_all},{dead}", rollback, repo, progress=lambda m: None, headers=ADMIN, timeout_s=600)
    assert (repo / C.MULTITASK / str(new)).exists()
    assert publish.load_into_triton(http_all, rollback, repo, progress=lambda m: None, headers=ADMIN, timeout_s=600)
    assert not (repo / C.MULTITASK / str(new)).exists()
    assert all(_serves(s.http_url, C.MULTITASK, old) for s in servers)


def test_model_control_needs_the_admin_header_on_both_protocols(replicas):
    servers, _, _ = replicas
    a = servers[0]
    http = httpclient.InferenceServerClient(a.http_url)
    grpc = grpcclient.InferenceServerClient(a.grpc_url)
    try:
        with pytest.raises(InferenceServerException):
            http.unload_model(C.DETECTOR)
        with pytest.raises(InferenceServerException):
            grpc.unload_model(C.DETECTOR)
        with pytest.raises(InferenceServerException):
            grpc.get_model_repository_index()
        assert http.is_model_ready(C.DETECTOR)  # nothing was unloaded
        # inference, health, metadata and config stay open: what the API uses
        assert grpc.is_server_ready() and grpc.get_model_config(C.MULTITASK)
        # with the header (gRPC prefixes it with triton-grpc-protocol-) it is allowed
        index = grpc.get_model_repository_index(headers={"triton-grpc-protocol-triton-admin-key": ADMIN_KEY})
        assert {m.name for m in index.models} >= {C.DETECTOR, C.MULTITASK, C.PIPELINE}
        http.load_model(C.DETECTOR, headers=ADMIN)
    finally:
        http.close()
        grpc.close()


def test_the_autoscaling_metrics_exist(replicas):
    """The series the ScaledObject queries, as this Triton version names them."""
    import urllib.request

    from tests.unit.test_kubernetes import _objects

    servers, _, _ = replicas
    with urllib.request.urlopen(servers[0].metrics_url, timeout=5) as r:
        page = r.read().decode()
    served = {line.split("{")[0] for line in page.splitlines() if line and not line.startswith("#")}
    queries = " ".join(t["metadata"]["query"]
                       for t in _objects("overlays/gpu", "ScaledObject")["triton"]["spec"]["triggers"])
    used = {w for w in re.findall(r"nv_[a-z_]+", queries)}
    assert used and used <= served, used - served
