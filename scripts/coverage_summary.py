"""Print coverage per package after `make test`, then the least-covered modules.

coverage.py reports per file only. This reads the data `pytest --cov` combined (the test
process and the Celery workers and scripts the fixtures started; see [tool.coverage.run]
in pyproject.toml), writes coverage's JSON report and sums
the files of each top-level package (finq_api, finq_core, finq_engine, finq_worker).
The percentages count lines and branches together, as coverage's own TOTAL does.

Run as `.venv/bin/python scripts/coverage_summary.py [--least N]`; for every file and its
missing lines use `.venv/bin/coverage report -m` (or `coverage html`) afterwards.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coverage

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Tally:
    """Lines and branches of one file or one package."""

    statements: int = 0
    missing: int = 0
    branches: int = 0
    missing_branches: int = 0

    def add(self, other: "Tally") -> None:
        self.statements += other.statements
        self.missing += other.missing
        self.branches += other.branches
        self.missing_branches += other.missing_branches

    @property
    def percent(self) -> float:
        total = self.statements + self.branches
        covered = total - self.missing - self.missing_branches
        return 100.0 * covered / total if total else 100.0


def file_tally(summary: dict[str, Any]) -> Tally:
    return Tally(
        statements=summary["num_statements"],
        missing=summary["missing_lines"],
        branches=summary.get("num_branches", 0),
        missing_branches=summary.get("missing_branches", 0),
    )


def module_name(path: str) -> str:
    """lib/finq_core/store.py -> finq_core/store.py (the package folder's parent dropped)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.startswith("finq_"):
            return "/".join(parts[i:])
    return path


def row(name: str, t: Tally) -> str:
    return (
        f"  {name:<14}{t.statements:>7}{t.missing:>8}{t.branches:>10}"
        f"{t.missing_branches:>10}{t.percent:>8.1f}%"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--least", type=int, default=8, help="how many modules to list")
    args = parser.parse_args()
    os.chdir(ROOT)  # the [tool.coverage] configuration and the data file are relative to it
    cov = coverage.Coverage()
    cov.load()
    if not cov.get_data().measured_files():
        print("coverage: no data (did the tests run with --cov?)", file=sys.stderr)
        return 1
    out = Path(cov.config.json_output)  # [tool.coverage.json] output
    cov.json_report()
    files = json.loads(out.read_text())["files"]

    modules = {module_name(path): file_tally(f["summary"]) for path, f in files.items()}
    modules = {name: t for name, t in modules.items() if t.statements}
    packages: dict[str, Tally] = {}
    total = Tally()
    for name, t in modules.items():
        packages.setdefault(name.split("/")[0], Tally()).add(t)
        total.add(t)

    print("\ncoverage per package (lines and branches; test process and its subprocesses)")
    print(f"  {'package':<14}{'lines':>7}{'missed':>8}{'branches':>10}{'missed':>10}{'cover':>9}")
    for name in sorted(packages):
        print(row(name, packages[name]))
    for name in sorted(set(cov.config.source or ()) - set(packages)):
        print(f"  {name:<14}never imported by the tests")
    print(row("total", total))
    print(f"least covered modules (of {len(modules)}):")
    for name, t in sorted(modules.items(), key=lambda item: item[1].percent)[: args.least]:
        print(f"  {t.percent:5.1f}%  {name} ({t.missing} of {t.statements} lines missed)")
    print(f"per file: .venv/bin/coverage report -m  (JSON report: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
