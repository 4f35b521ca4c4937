"""The benchmark's command line and the batch sizes that follow from it."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from . import __doc__ as about
from .config import TARGETS
from .database import add_database_options


@dataclass(frozen=True)
class Options:
    quick: bool
    repeats: int  # runs of each figure (1 with --quick)
    api_replicas: int
    workers: int
    rate: float
    concurrency: int
    no_docs: bool
    no_profile: bool
    skip_scaling: bool
    latency_only: bool
    database_url: str | None = None
    postgres: bool = False

    @property
    def n_noop(self) -> int:
        return 1000 if self.quick else 5000

    @property
    def target_s(self) -> float:
        """Seconds of work per batch (sizes follow the measured costs)."""
        return 4.0 if self.quick else 12.0

    @property
    def latency_s(self) -> float:
        """Seconds each latency step is counted (after a second of warm-up)."""
        return 3.0 if self.quick else 10.0

    @property
    def database(self) -> str:
        return "PostgreSQL" if self.postgres or self.database_url else "SQLite"

    @property
    def max_workers(self) -> int:
        return max(4, self.workers)


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=about, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small batches (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--api-replicas", type=int, default=int(os.environ.get("API_REPLICAS", "3"))
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKER_REPLICAS", "3")),
        help="worker replicas for figures 1-4 (scaling goes 1..max(4, this))",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=TARGETS["offered_rate"],
        help="offered submit rate of figure 4, requests/s",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only figure 4, submit latency (printed, not written to the doc)",
    )
    add_database_options(parser)
    args = parser.parse_args(argv)
    return Options(
        quick=args.quick,
        repeats=1 if args.quick else args.repeats,
        api_replicas=args.api_replicas,
        workers=args.workers,
        rate=args.rate,
        concurrency=args.concurrency,
        no_docs=args.no_docs,
        no_profile=args.no_profile,
        skip_scaling=args.skip_scaling,
        latency_only=args.latency_only,
        database_url=args.database_url,
        postgres=args.postgres,
    )
