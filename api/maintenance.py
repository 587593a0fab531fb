"""Operator tasks against the configured database.

    python -m api.maintenance purge [--days N]   erase unknown people not seen for N days
                                                  (default FA_RETENTION_DAYS) with their detections
    python -m api.maintenance add-key --label L  create an API key; prints it once, stores its hash

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
from api.settings import Settings, get_settings


async def purge(settings: Settings, days: int) -> list[str]:
    repo = Repository(settings)
    await repo.start()
    try:
        return await repo.purge_unknown_before(utcnow() - dt.timedelta(days=days))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.maintenance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("purge")
    pg.add_argument("--days", type=int)
    ak = sub.add_parser("add-key")
    ak.add_argument("--label", required=True)
    args = p.parse_args(argv)
    settings = get_settings()
    if args.command == "purge":
        days = args.days if args.days is not None else settings.server.retention_days
        if days <= 0:
            print("retention is off (FA_RETENTION_DAYS=0); pass --days N", file=sys.stderr)
            return 2
        ids = asyncio.run(purge(settings, days))
        print(f"purged {len(ids)} unknown people not seen for {days} days")
    else:
        print(asyncio.run(add_key(settings, args.label)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
