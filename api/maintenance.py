"""Operator tasks against the configured database.

    python -m api.maintenance purge [--days N]   erase unknown people not seen for N days
                                                  (default FA_RETENTION_DAYS) with their detections
    python -m api.maintenance add-key --label L  create an API key; prints it once, stores its hash
    python -m api.maintenance reembed [--version V]
                                                  re-compute stored embeddings made by another
                                                  face_multitask version from the stored face crops
    python -m api.maintenance export-gallery FILE
                                                 people, samples, embeddings (with their model
                                                  version) and face crops in one portable tar file
    python -m api.maintenance import-gallery FILE [--reembed] [--model-version V]
                                                 add an export's people to this gallery (same ids);
                                                  refuses embeddings of another model version unless
                                                  --reembed (recomputed from the crops through Triton)
    python -m api.maintenance add-webhook URL --events E[,E...] [--description D]
                                                 subscribe a URL to identity events (as POST /webhooks);
                                                  prints the new subscription's id and secret once
    python -m api.maintenance list-webhooks      subscriptions with delivery counts (no secrets)
    python -m api.maintenance remove-webhook ID  unsubscribe; pending deliveries are dropped

Why reembed: embeddings of two model versions are not comparable, so after a promotion of
face_multitask every stored embedding is recomputed by the new version (default: the version
face_pipeline embeds with when asked for none, i.e. @production as published). The stored crop
is exactly the aligned canvas the model takes, so no original photo is needed. It runs in one
transaction under the gallery lock: the API workers see the whole gallery move to the new
version at once, and from then on ask Triton for that version (api.identity).

Running API workers drop purged people from their galleries within FA_MATCH_SYNC_INTERVAL_S.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import secrets
import sys

from api.auth import key_hash
from api.repository import Repository, utcnow
from core.settings import Settings, get_settings


async def purge(settings: Settings, days: int) -> list[str]:
    from api.webhooks import Webhooks

    repo = Repository(settings)
    await repo.start()
    hooks = Webhooks(repo, settings.webhooks)  # no cache here: the subscriptions are read in the transaction
    try:
        return await repo.purge_unknown_before(utcnow() - dt.timedelta(days=days),
                                               on_purged=lambda tx, ids: hooks.deleted(tx, ids, "retention"))
    finally:
        await repo.close()


async def add_key(settings: Settings, label: str) -> str:
    key = secrets.token_urlsafe(32)
    repo = Repository(settings)
    await repo.start()
    try:
        await repo.add_api_key(key_hash(key), label)
    finally:
        await repo.close()
    return key


async def reembed(settings: Settings, progress=print, chunk: int = 32, version: str | None = None) -> int:
    import cv2
    import numpy as np

    from api.identity import normalised_mean
    from api.inference import InferenceClient

    repo, client = Repository(settings), InferenceClient(settings.triton)
    await repo.start()
    try:
        version = version or await client.default_multitask_version()
        if not version or not await client.client.is_model_ready(settings.triton.multitask_model, version):
            raise SystemExit(f"face_multitask v{version} is not served; start Triton / publish first")
        model = (settings.triton.multitask_model, version)
        async with repo.transaction(locked=True) as tx:
            rows = await repo.stale_crops(tx, model[1])
            progress(f"re-embedding {len(rows)} stored faces with {model[0]} v{model[1]}")
            now, touched = utcnow(), set()
            for start in range(0, len(rows), chunk):
                part = rows[start:start + chunk]
                chips = np.stack([cv2.imdecode(np.frombuffer(r[3], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                                  for r in part])
                embs = await client.embed_chips(chips, version)
                for (kind, key, person_id, _), emb in zip(part, embs):
                    await repo.set_embedding(tx, kind, key, emb.astype(np.float32).tobytes(), model, now)
                    touched.add(person_id)
                progress(f"  {min(start + chunk, len(rows))}/{len(rows)}")
            for person_id in touched:  # known people: the template is the mean of their samples
                samples = await repo.known_samples(tx, person_id)
                if len(samples):
                    await repo.update_known_template(tx, person_id, normalised_mean(samples).tobytes(),
                                                     len(samples), now)
                    await repo.set_known_model(tx, person_id, model)
            await repo.log_change(tx, sorted(touched), now)
        return len(rows)
    finally:
        await client.close()
        await repo.close()


async def manage_webhooks(settings: Settings, args) -> int:
    from api import webhooks

    repo = Repository(settings)
    await repo.start()
    try:
        if args.command == "add-webhook":
            try:
                url, events = webhooks.check_url(args.url, settings.webhooks), webhooks.parse_events(args.events)
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
            secret = webhooks.new_secret()
            sid, _ = await repo.add_subscription(url, secret, events, args.description)
            print(f"webhook {sid}: {url} ({events})\nsecret (shown once): {secret}")
        elif args.command == "list-webhooks":
            for sid, url, events, desc, created, pending, delivered, failed, error in await repo.list_subscriptions():
                print(f"{sid}\t{url}\t{events}\tpending {pending}, delivered {delivered}, failed {failed}"
                      + (f"\tlast error {error}" if error else ""))
        elif not await repo.delete_subscription(args.id):
            print(f"no webhook {args.id}", file=sys.stderr)
            return 1
        return 0
    finally:
        await repo.close()


def transfer(settings: Settings, args) -> int:
    from api import gallery_transfer as gt

    try:
        if args.command == "export-gallery":
            m = asyncio.run(gt.export_gallery(settings, args.file))
            print(f"exported {m['known_people']} known and {m['unknown_people']} unknown people, "
                  f"{m['samples']} embeddings ({', '.join(m['embedding_models']) or 'none'}) to {args.file}")
            return 0
        model = (settings.triton.multitask_model, args.model_version) if args.model_version else None
        r = asyncio.run(gt.import_gallery(settings, args.file, reembed=args.reembed, model=model))
    except gt.TransferError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"imported {len(r.imported)} people ({r.reembedded} embeddings re-embedded); skipped "
          f"{len(r.skipped_existing)} whose id exists here and {len(r.skipped_name_taken)} whose name "
          "another person here has")
    for pid in r.skipped_name_taken:
        print(f"  name taken: {pid}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.maintenance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("purge")
    pg.add_argument("--days", type=int)
    ak = sub.add_parser("add-key")
    ak.add_argument("--label", required=True)
    re_ = sub.add_parser("reembed")
    re_.add_argument("--version", help="face_multitask version to embed with (default: face_pipeline's default)")
    ex = sub.add_parser("export-gallery")
    ex.add_argument("file")
    im = sub.add_parser("import-gallery")
    im.add_argument("file")
    im.add_argument("--reembed", action="store_true",
                    help="recompute embeddings of another face_multitask version from their crops (needs Triton)")
    im.add_argument("--model-version", help="the face_multitask version this site serves, when Triton is not "
                                            "running (default: ask Triton)")
    aw = sub.add_parser("add-webhook")
    aw.add_argument("url")
    aw.add_argument("--events", required=True, help='comma list of event types, or "*"')
    aw.add_argument("--description")
    sub.add_parser("list-webhooks")
    rw = sub.add_parser("remove-webhook")
    rw.add_argument("id", type=int)
    args = p.parse_args(argv)
    settings = get_settings()
    if args.command == "purge":
        days = args.days if args.days is not None else settings.server.retention_days
        if days <= 0:
            print("retention is off (FA_RETENTION_DAYS=0); pass --days N", file=sys.stderr)
            return 2
        ids = asyncio.run(purge(settings, days))
        print(f"purged {len(ids)} unknown people not seen for {days} days")
    elif args.command in ("add-webhook", "list-webhooks", "remove-webhook"):
        return asyncio.run(manage_webhooks(settings, args))
    elif args.command in ("export-gallery", "import-gallery"):
        return transfer(settings, args)
    elif args.command == "reembed":
        n = asyncio.run(reembed(settings, version=args.version))
        print(f"re-embedded {n} stored faces")
    else:
        print(asyncio.run(add_key(settings, args.label)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
