"""deploy/k8s, checked without a cluster: every kustomization renders (`kubectl kustomize`,
the kustomize built into kubectl, which this machine's image ships), every object validates
strictly against the Kubernetes OpenAPI schema (kubernetes-validate) or, for the two CRDs,
against the schema of their generated models (cloudcoil-models-*), and the objects fit
together: selectors select, references resolve, settings are settings the code reads."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess

import pytest
import yaml

from core.settings import PROJECT_ROOT, Settings
from export.triton_config import Tuning

K8S = PROJECT_ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("overlays/gpu", "overlays/cpu", "jobs/publish", "jobs/reembed")
# the oldest Kubernetes still in upstream support when this was written; autoscaling/v2 and
# policy/v1 (used here) exist since 1.23 / 1.21
KUBERNETES_VERSION = "1.32.0"


@functools.cache
def _render(path: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: it comes with this machine image (google-cloud-cli); "
                    "`kubectl kustomize` renders deploy/k8s offline")
    return subprocess.run([kubectl, "kustomize", str(K8S / path)], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def render(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_render(path)) if d]


def _objects(path: str, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in render(path) if d["kind"] == kind}


def triton_container(docs: list[dict]) -> dict:
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    return dep["spec"]["template"]["spec"]["containers"][0]


def _strict(schema: dict) -> dict:
    """The generated models ignore unknown fields; a typo must fail, as kubectl's strict
    field validation would make it fail."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return schema


@functools.cache
def _crd_validators():
    import jsonschema
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    models = {("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
              ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor}
    return {key: jsonschema.Draft202012Validator(_strict(model.model_json_schema(by_alias=True)))
            for key, model in models.items()}


def validate(doc: dict) -> list[str]:
    """Schema errors of one object (empty when valid)."""
    import kubernetes_validate

    crd = _crd_validators().get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        return [e.message for e in crd.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc).splitlines()[0]]
    return []


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_object_renders_and_validates(path):
    docs = render(path)
    assert docs
    errors = {f'{d["kind"]}/{d["metadata"]["name"]}': validate(d) for d in docs}
    assert {k: v for k, v in errors.items() if v} == {}
    assert all(d["metadata"].get("namespace") == "face-analytics" for d in docs if d["kind"] != "Namespace")


def test_validation_catches_mistakes():
    dep = json.loads(json.dumps(_objects("overlays/gpu", "Deployment")["face-api"]))
    dep["spec"]["replica"] = 2
    assert validate(dep)
    scaled = json.loads(json.dumps(_objects("overlays/gpu", "ScaledObject")["triton"]))
    scaled["spec"]["minReplicaCnt"] = 1
    assert validate(scaled)
    monitor = json.loads(json.dumps(_objects("overlays/gpu", "ServiceMonitor")["triton"]))
    monitor["spec"]["endpoints"][0]["interval"] = 15
    assert validate(monitor)


def _pod_templates(docs):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d, spec["template"]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_selectors_select_and_references_resolve(overlay):
    docs = render(overlay) + render("jobs/publish") + render("jobs/reembed")
    pods = {d["metadata"]["name"]: t["metadata"]["labels"] for d, t in _pod_templates(docs)}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for d in docs:
        sel = None
        if d["kind"] == "Service":
            sel = d["spec"]["selector"]
        elif d["kind"] in ("PodDisruptionBudget", "Deployment", "StatefulSet"):
            sel = d["spec"]["selector"]["matchLabels"]
        if sel is not None:
            assert any(_matches(sel, labels) for labels in pods.values()), d["metadata"]["name"]
        if d["kind"] == "ServiceMonitor":
            ports = {p["name"] for s in services.values()
                     if _matches(d["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
                     for p in s["spec"]["ports"]}
            assert {e["port"] for e in d["spec"]["endpoints"]} <= ports, d["metadata"]["name"]
        if d["kind"] == "NetworkPolicy":
            for rule in d["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    if "podSelector" in peer:
                        assert any(_matches(peer["podSelector"]["matchLabels"], labels)
                                   for labels in pods.values()), (d["metadata"]["name"], peer)
    scaled = [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] in ("ScaledObject",
                                                                               "HorizontalPodAutoscaler")]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert set(scaled) == {"triton", "face-api"} and set(scaled) <= deployments

    # ConfigMaps, PVCs and (in the cpu overlay, which generates them) Secrets referenced exist
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    secrets = {d["metadata"]["name"]: set(d.get("data", {})) for d in docs if d["kind"] == "Secret"}
    for _, template in _pod_templates(docs):
        spec = template["spec"]
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config_maps[ref["configMapKeyRef"]["name"]]
                if "secretKeyRef" in ref and secrets:
                    assert ref["secretKeyRef"]["key"] in secrets[ref["secretKeyRef"]["name"]], e
            for e in c.get("envFrom", []):
                if "configMapRef" in e:
                    assert e["configMapRef"]["name"] in config_maps
                if "secretRef" in e and secrets:
                    assert e["secretRef"]["name"] in secrets


def _secret_refs(docs) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    for _, template in _pod_templates(docs):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def test_production_secrets_are_documented_and_none_is_in_git():
    docs = render("overlays/gpu") + render("jobs/publish") + render("jobs/reembed")
    assert not [d for d in docs if d["kind"] == "Secret"], "production secrets are made out of band"
    page = (PROJECT_ROOT / "docs" / "kubernetes.md").read_text()
    overlay = (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()
    for name, keys in _secret_refs(docs).items():
        for key in keys:
            assert name in page and key in page, (name, key)
            assert name in overlay and key in overlay, (name, key)


def _setting_names() -> set[str]:
    names = set()
    for group in Settings.model_fields.values():
        cls = group.default_factory
        prefix = cls.model_config.get("env_prefix", "")
        names |= {(prefix + field).upper() for field in cls.model_fields}
    return names


def test_every_configured_variable_is_a_setting_the_code_reads():
    known = _setting_names()
    config = _objects("overlays/cpu", "ConfigMap")["face-analytics-config"]["data"]
    assert set(config) <= known, set(config) - known
    for overlay in ("overlays/gpu", "jobs/publish", "jobs/reembed"):
        for d, template in _pod_templates(render(overlay)):
            if d["metadata"]["name"] in ("mysql", "mlflow", "minio", "minio-bucket", "triton"):
                continue  # third-party images: their own variables
            for c in template["spec"]["containers"]:
                names = {e["name"] for e in c.get("env", [])}
                assert names <= known, (d["metadata"]["name"], names - known)


def test_triton_follows_the_chart_where_it_is_sound():
    docs = render("overlays/gpu")
    c = triton_container(docs)
    dep = _objects("overlays/gpu", "Deployment")["triton"]
    spec = dep["spec"]["template"]["spec"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["startupProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in c["volumeMounts"])
    models = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
    assert models["readOnly"] is True
    # the gpu configs cache TensorRT engines in a directory Triton must be able to write
    cache_dir = Tuning().trt_cache_dir
    cache = next(m for m in c["volumeMounts"] if m["mountPath"] == cache_dir)
    assert not cache.get("readOnly") and "emptyDir" in next(v for v in spec["volumes"] if v["name"] == cache["name"])
    svc = _objects("overlays/gpu", "Service")["triton"]
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001, 8002}
    # the API balances per request over the headless Service's pods
    config = _objects("overlays/gpu", "ConfigMap")["face-analytics-config"]["data"]
    assert config["TRITON_GRPC_URL"].startswith("dns:///triton.") and config["TRITON_GRPC_LB_POLICY"] == "round_robin"
    # model control restricted on both protocols, and the HTTP port open to the export Job only
    restricted = [a for a in c["args"] if "restricted" in a]
    assert len(restricted) == 2 and all("model-repository" in a for a in restricted)
    policy = _objects("overlays/gpu", "NetworkPolicy")["triton"]
    http_from = [peer for rule in policy["spec"]["ingress"] if 8000 in [p["port"] for p in rule["ports"]]
                 for peer in rule["from"]]
    assert http_from == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "export"}}}]
    # the cpu overlay: no GPU, the wheel's tritonserver as entrypoint
    cpu = triton_container(render("overlays/cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert cpu["args"][0].startswith("--model-repository")
    assert _objects("overlays/cpu", "ConfigMap")["face-analytics-config"]["data"]["TRITON_TARGET"] == "cpu"


def test_autoscaling_uses_tritons_queue_signal():
    scaled = _objects("overlays/gpu", "ScaledObject")["triton"]
    queries = " ".join(t["metadata"]["query"] for t in scaled["spec"]["triggers"])
    assert "nv_inference_queue_duration_us" in queries and "nv_inference_request_success" in queries
    assert "nv_inference_pending_request_count" in queries
    hpa = _objects("overlays/gpu", "HorizontalPodAutoscaler")["face-api"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "face-api" in _objects("overlays/gpu", "PodDisruptionBudget")
