"""docker-compose.yml as Compose reads it, without a docker client: YAML with compose's
`!reset` / `!override` tags, `${VAR...}` interpolation, and the merge of an override file.

Only what the Compose Specification says (interpolation.md, merge.md) for the constructs our
files use; the tests read the files through this, never re-typed copies of them.
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("compose-spec.json")


class _Reset:
    """`!reset`: remove the key from the merged model."""


class _Override:
    def __init__(self, value):
        self.value = value


class _Loader(yaml.SafeLoader):
    pass


def _construct(cls):
    def build(loader, node):
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return _Reset() if cls is _Reset else _Override(value)
    return build


_Loader.add_constructor("!reset", _construct(_Reset))
_Loader.add_constructor("!override", _construct(_Override))


# --- interpolation (compose-spec interpolation.md) ------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":  # $$ is a literal $
            out.append("$")
            i += 2
        elif nxt == "{":
            end, depth = i + 2, 1
            while depth:
                if end >= len(text):
                    raise ValueError(f"unterminated ${{ in {text!r}")
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            out.append(_braced(text[i + 2:end - 1], env))
            i = end
        else:
            m = _NAME.match(text, i + 1)
            if not m:
                raise ValueError(f"invalid interpolation in {text!r}")
            out.append(env.get(m.group(), ""))
            i = m.end()
    return "".join(out)


def _braced(expr: str, env: dict[str, str]) -> str:
    m = _NAME.match(expr)
    if not m:
        raise ValueError(f"invalid interpolation ${{{expr}}}")
    name, rest = m.group(), expr[m.end():]
    value = env.get(name)
    if not rest:
        return value or ""
    for op in (":-", "-", ":?", "?", ":+", "+"):
        if rest.startswith(op):
            arg = interpolate(rest[len(op):], env)
            unset_or_empty = value is None or (op.startswith(":") and value == "")
            if op.endswith("-"):
                return arg if unset_or_empty else value
            if op.endswith("?"):
                if unset_or_empty:
                    raise ValueError(f"required variable {name}: {arg}")
                return value
            return "" if unset_or_empty else arg
    raise ValueError(f"invalid interpolation ${{{expr}}}")


def _interpolate_tree(node, env):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, _Override):
        return _Override(_interpolate_tree(node.value, env))
    return node


# --- merge (compose-spec merge.md) --------------------------------------------------------

# sequences that an override replaces instead of appending to
_REPLACED = {"command", "entrypoint", "test"}


def _env_mapping(value) -> dict:
    if isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)
    return dict(value or {})


def _volume_target(entry) -> str:
    if isinstance(entry, dict):
        return entry["target"]
    parts = entry.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge(base, over, key=None):
    if isinstance(over, _Override):
        return copy.deepcopy(over.value)
    if isinstance(base, dict) and isinstance(over, dict):
        if key == "environment":
            base, over = _env_mapping(base), _env_mapping(over)
        out = dict(base)
        for k, v in over.items():
            if isinstance(v, _Reset):
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, k)
            else:
                out[k] = _strip(v)
        return out
    if key == "environment":
        return _merge(_env_mapping(base), _env_mapping(over), key)
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        if key == "volumes":
            merged = {_volume_target(v): v for v in base}
            merged.update({_volume_target(v): v for v in over})
            return list(merged.values())
        return base + [v for v in over if v not in base]
    return _strip(over)


def _strip(node):
    """Drop override markers from a subtree that had nothing to merge into."""
    if isinstance(node, _Override):
        return _strip(node.value)
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not isinstance(v, _Reset)}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def raw(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)


def load(files=("docker-compose.yml",), env: dict[str, str] | None = None) -> dict:
    """The merged, interpolated model of `docker compose -f A -f B config`."""
    model: dict = {}
    for name in files:
        data = _interpolate_tree(raw(ROOT / name), env or {})
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
        model = _merge(model, data) if model else _strip(data)
    return model


def environment(service: dict) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in _env_mapping(service.get("environment")).items()}


# --- the images we build: what compose takes from their Dockerfile ---------------------------

@dataclass
class Image:
    """ENTRYPOINT, CMD, USER, WORKDIR, ENV, COPY and RUN of one build target."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = "root"
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination)
    runs: list[str] = field(default_factory=list)


def _exec_form(arg: str) -> list[str]:
    import json

    arg = arg.strip()
    return json.loads(arg) if arg.startswith("[") else ["/bin/sh", "-c", arg]


def dockerfile(path: Path, target: str | None = None) -> Image:
    """Follow the FROM chain of `target` (default: the last stage) inside one Dockerfile."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    order, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, arg = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(order)}"
            current = name
            stages[name] = (parts[0], [])
            order.append(name)
        elif current is not None:
            stages[current][1].append((instr, arg))
    chain, name = [], target or order[-1]
    while name in stages:
        chain.insert(0, name)
        name = stages[name][0]
    img = Image()
    for stage in chain:
        for instr, arg in stages[stage][1]:
            if instr == "ENTRYPOINT":
                img.entrypoint, img.cmd = _exec_form(arg), []
            elif instr == "CMD":
                img.cmd = _exec_form(arg)
            elif instr == "USER":
                img.user = arg.strip()
            elif instr == "WORKDIR":
                img.workdir = str(Path(img.workdir, arg.strip()))
            elif instr == "ENV":
                for k, v in (kv.split("=", 1) for kv in shlex.split(arg)):
                    img.env[k] = v
            elif instr == "RUN":
                img.runs.append(arg.strip())
            elif instr == "COPY":
                words = [w for w in shlex.split(arg) if not w.startswith("--chown")]
                if not any(w.startswith("--from") for w in words):
                    img.copies.append((words[:-1], words[-1]))
    return img


def service_image(service: dict) -> Image | None:
    build = service.get("build")
    if not build:
        return None
    return dockerfile(ROOT / build.get("context", ".") / build["dockerfile"], build.get("target"))


def service_argv(service: dict, image: Image | None) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's."""
    image = image or Image()

    def _words(v):
        return shlex.split(v) if isinstance(v, str) else list(v)

    entrypoint = _words(service["entrypoint"]) if "entrypoint" in service else image.entrypoint
    if "command" in service:
        command = _words(service["command"])
    else:
        command = [] if "entrypoint" in service else image.cmd
    return entrypoint + command


def promotion_command() -> str:
    """The promotion command of docs/deployment.md (the as-deployed test runs it)."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    m = re.search(r"<!-- promotion -->\s*```(?:bash)?\n(.+?)\n```", text, re.S)
    if not m:
        raise LookupError("docs/deployment.md lost its <!-- promotion --> block")
    return m.group(1).strip()
