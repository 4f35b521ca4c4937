#!/usr/bin/env python3
"""What checking a token's account costs per request: the lookup by name of tokens before
ids (the baseline) against today's lookup by id with its version and deletion checks
(finq_core.accounts.token_user), on one SQLite database of USERS accounts, in one run.

    .venv/bin/python scripts/bench_auth.py [--users 10000] [--lookups 20000]

Prints the median microseconds per lookup over REPEATS rounds and the ratio to the baseline.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("APP_SECRET_KEY", "bench-secret-key-that-is-long-enough-for-hs256")
    with tempfile.TemporaryDirectory(prefix="finq-bench-auth-") as folder:
        os.environ["DATABASE_URL"] = f"sqlite:///{Path(folder)}/bench.db"
        run(args.users, args.lookups)


def run(users: int, lookups: int) -> None:

    from sqlalchemy import bindparam, insert, select

    from finq_core.accounts import USERS, token_user
    from finq_core.db import get_sessionmaker
    from finq_core.migrate import upgrade
    from finq_core.models import User

    upgrade()
    session = get_sessionmaker()()
    session.execute(
        insert(USERS),
        [
            {
                "username": f"user{i}",
                "username_key": f"user{i}",
                "password_hash": "x",
                "role": "user",
            }
            for i in range(users)
        ],
    )
    session.commit()
    by_name = select(*USERS.c).where(USERS.c.username == bindparam("username"))

    def baseline(i: int) -> User | None:
        row = session.execute(by_name, {"username": f"user{i}"}).first()
        session.commit()
        return None if row is None else User(**row._mapping)

    def today(i: int) -> User | None:
        return token_user(session, i + 1, 0)

    assert baseline(5) is not None and today(5) is not None
    timings: dict[str, list[float]] = {"by name (baseline)": [], "by id + version": []}
    step = max(1, users // lookups) or 1
    for _ in range(REPEATS):
        for label, lookup in zip(timings, (baseline, today), strict=True):
            start = time.perf_counter()
            for n in range(lookups):
                lookup((n * step * 7919) % users)
            timings[label].append((time.perf_counter() - start) / lookups * 1e6)
    base = statistics.median(timings["by name (baseline)"])
    print(f"{users} accounts, {lookups} lookups x {REPEATS} rounds (SQLite)")
    for label, runs in timings.items():
        median = statistics.median(runs)
        print(f"  {label:<20} median {median:6.1f} us/lookup   ratio {median / base:4.2f}")
    session.close()


if __name__ == "__main__":
    main()
