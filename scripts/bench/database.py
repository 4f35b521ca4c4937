"""The benchmarks' database: the local stack's SQLite file (the default), a PostgreSQL given by
URL, or a throwaway PostgreSQL cluster the bench starts and stops itself (`--postgres`)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from throwaway_postgres import throwaway_postgres


def add_database_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--database-url", help="a PostgreSQL URL (default: SQLite)")
    group.add_argument(
        "--postgres",
        action="store_true",
        help="run on a throwaway PostgreSQL cluster (fsync off) started and stopped here",
    )


@contextlib.contextmanager
def database(url: str | None, postgres: bool) -> Iterator[str | None]:
    """The URL the stack runs on (None: SQLite), for as long as the context lasts."""
    if not postgres:
        yield url
        return
    with throwaway_postgres() as started:
        yield started
