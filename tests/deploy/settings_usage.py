"""Which settings a service's code reads, found in its source (no import, no run).

A service's code is the closure of project modules imported from its entry module (imports
anywhere in a module count, lazy ones included). A setting counts as read where the code
takes `<...>.<group>.<field>`, or `<name>.<field>` on a name bound to a settings group
(`t = settings.triton`, `self.s = settings.mysql`, a parameter annotated `TritonSettings`),
or uses a Settings property (`settings.sqlite_path`) that reads it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings

PACKAGES = ("core", "api", "export", "pipeline", "tools", "db")


def groups() -> dict[str, tuple[str, set[str], str]]:
    """group attribute -> (class name, field names, env prefix)."""
    out = {}
    for group, f in Settings.model_fields.items():
        cls = f.annotation
        out[group] = (cls.__name__, set(cls.model_fields), cls.model_config.get("env_prefix", ""))
    return out


def env_names() -> dict[str, tuple[str, str]]:
    """ENV_NAME -> (group, field) for every setting."""
    return {f"{prefix}{name}".upper(): (group, name)
            for group, (_, names, prefix) in groups().items() for name in names}


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = module.rsplit(".", node.level)[0] if path.name != "__init__.py" or node.level > 1 \
                    else module
                base = f"{pkg}.{node.module}" if node.module else pkg
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "api.main:app": an application uvicorn imports by name
            m = re.fullmatch(r"([a-z_][a-z0-9_.]*):[A-Za-z_]\w*", node.value)
            if m:
                found.add(m.group(1))
    return {n for n in found if n.split(".")[0] in PACKAGES}


def closure(entry: str) -> dict[str, Path]:
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        todo += sorted(_imports(path, name))
    return seen


def _chain(node) -> list[str]:
    out = []
    while isinstance(node, ast.Attribute):
        out.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        out.insert(0, node.id)
    return out


def _properties() -> dict[str, set[tuple[str, str]]]:
    """Settings property -> the (group, field) pairs its body reads."""
    tree = ast.parse((PROJECT_ROOT / "core" / "settings.py").read_text())
    g = groups()
    out = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"):
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and any(
                    isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                reads = set()
                for node in ast.walk(fn):
                    c = _chain(node) if isinstance(node, ast.Attribute) else []
                    if len(c) >= 3 and c[0] == "self" and c[1] in g and c[2] in g[c[1]][1]:
                        reads.add((c[1], c[2]))
                out[fn.name] = reads
    return out


def reads(paths) -> set[tuple[str, str]]:
    g = groups()
    by_class = {cls: group for group, (cls, _, _) in g.items()}
    props = _properties()
    found: set[tuple[str, str]] = set()
    settings_py = (PROJECT_ROOT / "core" / "settings.py").resolve()
    for path in paths:
        if Path(path).resolve() == settings_py:  # defines the settings, reads none
            continue
        tree = ast.parse(Path(path).read_text())
        bound: dict[str, str] = {}  # "t" or "self.s" -> group
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in node.args.args + node.args.kwonlyargs:
                    ann = ast.unparse(a.annotation) if a.annotation else ""
                    for cls, group in by_class.items():
                        if re.search(rf"\b{cls}\b", ann):
                            bound[a.arg] = group
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = ".".join(_chain(node.targets[0]))
                value = _chain(node.value) if isinstance(node.value, ast.Attribute) else []
                if value and value[-1] in g:
                    bound[target] = value[-1]
                elif isinstance(node.value, ast.Name) and node.value.id in bound:
                    bound[target] = bound[node.value.id]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            c = _chain(node)
            if len(c) >= 2 and c[-2] in g and c[-1] in g[c[-2]][1]:
                found.add((c[-2], c[-1]))
            owner = ".".join(c[:-1])
            if owner in bound and c[-1] in g[bound[owner]][1]:
                found.add((bound[owner], c[-1]))
            if c and c[-1] in props and len(c) >= 2:
                found |= props[c[-1]]
    return found


def local_default(group: str, name: str) -> bool:
    """A default that only makes sense on a developer's machine (loopback, project dir)."""
    cls = Settings.model_fields[group].annotation
    default = cls.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, Path):
        return default.is_relative_to(PROJECT_ROOT)
    return isinstance(default, str) and ("127.0.0.1" in default or "localhost" in default)
