"""``face-analytics`` (also ``python test_api.py``): the spec's command-line client.

    face-analytics photo.jpg                    # table of every face
    face-analytics photo.jpg --register "Ada"   # register the face as Ada, then analyse
    face-analytics --stats                      # /stats
    face-analytics --health                     # /health (exit 1 unless healthy)
    face-analytics --url http://host:8000 --api-key KEY photo.jpg

Exit codes: 0 ok, 1 the API refused or is unhealthy, 2 bad usage, 3 API unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from face_analytics_client.client import DEFAULT_URL, FaceAnalyticsClient
from face_analytics_client.errors import ApiError, ConnectionFailed
from face_analytics_client.models import Analysis, Health, Stats


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_analysis(a: Analysis, source: str = "") -> str:
    size = f" ({a.image['width']}x{a.image['height']})" if a.image else ""
    head = f"{source}{size}: {a.message}"
    if not a.faces:
        return head
    quality = any(f.quality is not None for f in a.faces)
    headers = ["#", "who", "person_id", "age", "gender", "similarity", "detection", "box x,y,w,h"]
    headers += ["quality"] if quality else []
    rows = []
    for i, f in enumerate(a.faces, 1):
        b = f.bbox
        row = [i, f.person_name or f.identity or "-", f.person_id or "-", f"{f.age:.0f}",
               f"{f.gender} {f.gender_confidence:.0%}",
               "new" if f.similarity is None else f"{f.similarity:.3f}", f"{f.confidence:.2f}",
               f"{b.x},{b.y},{b.width},{b.height}"]
        rows.append(row + ([("" if f.quality is None else f"{f.quality.overall:.2f}")] if quality else []))
    return head + "\n" + table(headers, rows)


def format_stats(s: Stats) -> str:
    lines = [table(["figure", "value"], [
        ["known people", s.known_faces], ["unknown people", s.unknown_faces],
        ["detections", s.total_detections], ["detections, last 24 h", s.recent_detections_24h],
        ["as of", s.last_updated.isoformat(timespec="seconds")]])]
    if s.top_unknown_faces:
        lines += ["", "top unknown people", table(["person_id", "detections", "last seen"], [
            [u.person_id, u.detection_count, u.last_seen.isoformat(timespec="seconds")]
            for u in s.top_unknown_faces])]
    return "\n".join(lines)


def format_health(h: Health) -> str:
    lines = [f"status: {h.status}", table(["service", "up"], [[k, "yes" if v else "NO"]
                                                            for k, v in h.services.items()])]
    if h.models:
        lines += ["", table(["model", "ready", "version", "mlflow version"], [
            [name, "yes" if m.get("ready") else "NO", m.get("version"), m.get("mlflow_version")]
            for name, m in h.models.items()])]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="face-analytics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", type=Path, help="photos to analyse")
    p.add_argument("--register", metavar="NAME", help="register the (single) face of the photo under NAME first")
    p.add_argument("--largest-face", action="store_true", help="with --register: take the largest of several faces")
    p.add_argument("--mode", choices=("track", "search", "detect"),
                   help="/analyze mode: track (the server's default) remembers faces; search and detect write nothing")
    p.add_argument("--stats", action="store_true", help="print /stats")
    p.add_argument("--health", action="store_true", help="print /health; exit 1 unless healthy")
    p.add_argument("--url", default=DEFAULT_URL, help=f"API base URL (default {DEFAULT_URL})")
    p.add_argument("--api-key", help="X-API-Key, when the API has keys on")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    return p


def run(args: argparse.Namespace, out=None) -> int:
    out, code = out or sys.stdout, 0
    with FaceAnalyticsClient(args.url, api_key=args.api_key, timeout=args.timeout) as fa:
        if args.health:
            h = fa.health()
            print(format_health(h), file=out)
            code = max(code, 0 if h.healthy else 1)
        if args.register is not None:
            r = fa.register(args.images[0], args.register, largest_face=args.largest_face)
            extra = f"; took over the history of {r.promoted_unknown_id}" if r.promoted_unknown_id else ""
            print(f"{r.message}: {r.person_id} ({r.samples} sample(s){extra})", file=out)
        for image in args.images:
            print(format_analysis(fa.analyze(image, args.mode), str(image)), file=out)
        if args.stats:
            print(format_stats(fa.stats()), file=out)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not (args.images or args.stats or args.health):
        p.error("give a photo, --stats or --health")
    if args.register is not None and len(args.images) != 1:
        p.error("--register needs exactly one photo")
    missing = [str(i) for i in args.images if not i.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    try:
        return run(args)
    except ApiError as exc:
        print(f"error: the API answered {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
