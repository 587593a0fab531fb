"""What an operator does with the stack, as test_as_deployed.py asks for it: `up -d face-api`,
use the API through the service names, create a new model version, run the promotion
command of docs/deployment.md, re-embed, and look again. Runs inside tests.deploy.stack."""

from __future__ import annotations

import os
import shlex
import time

import httpx

from core.settings import SHARED_DATA
from tests.deploy import compose

DATA = SHARED_DATA
WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"


def _photo(rel: str):
    path = DATA / rel
    return {"file": (path.name, path.read_bytes(), "image/jpeg")}


def _record(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        body = r.text[:500]
    return {"status": r.status_code, "body": body}


def _run(stack, service: str, command, out: dict, key: str) -> None:
    r = stack.run(service, command, timeout=400)
    out[key] = {"returncode": r.returncode, "stdout": r.stdout[-2000:], "stderr": r.stderr[-3000:]}
    if r.returncode != 0:
        raise RuntimeError(f"{key}: exit {r.returncode}\n{r.stderr[-3000:]}")


def deployed(stack) -> dict:
    key = os.environ["FA_TEST_API_KEY"]
    out: dict = {"up": stack.up("face-api", timeout=420)}
    port = 8000  # the container port; the host port range is a docker feature
    api = httpx.Client(base_url=f"http://face-api:{port}", timeout=60)
    authed = {"X-API-Key": key}
    out["health"] = _record(api.get("/health"))
    out["analyze_without_key"] = _record(api.post("/analyze", files=_photo(WOMAN.format(0))))
    out["analyze"] = _record(api.post("/analyze", files=_photo("verification/images/Joe_Biden/biden.jpg"),
                                      headers=authed))
    out["register"] = _record(api.post("/register", files=_photo(WOMAN.format(0)),
                                       data={"person_name": "Deployed Woman"}, headers=authed))
    out["recognised"] = _record(api.post("/analyze", files=_photo(WOMAN.format(218)), headers=authed))

    # a new face_multitask version (the fp32 graph), then the documented promotion
    _run(stack, "export", ["python -m export bootstrap --fp32"], out, "new_version")
    words = shlex.split(compose.promotion_command())
    assert words[:5] == ["docker", "compose", "run", "--rm", "export"]
    out["promotion_command"] = compose.promotion_command()
    _run(stack, "export", words[5:], out, "promotion")
    deadline = time.monotonic() + 60
    while True:
        out["health_after"] = _record(api.get("/health"))
        models = out["health_after"]["body"].get("models", {}) if isinstance(out["health_after"]["body"], dict) else {}
        if models.get("face_multitask", {}).get("mlflow_version") == "2" or time.monotonic() > deadline:
            break
        time.sleep(1)
    # `docker compose exec face-api python -m api.maintenance reembed`
    _run(stack, "face-api", ["python", "-m", "api.maintenance", "reembed"], out, "reembed")
    out["recognised_after"] = _record(api.post("/analyze", files=_photo(WOMAN.format(218)), headers=authed))
    out["stats"] = _record(api.get("/stats", headers=authed))
    api.close()
    return out
