"""`make help` lists every target of the Makefile, each with what it does."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_target() -> None:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z0-9][a-z0-9-]*):", text, flags=re.M))
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    described = {line.split()[0] for line in listed.splitlines() if len(line.split()) > 1}
    assert len(targets) > 10
    assert targets - described == set(), f"missing from `make help`: {sorted(targets - described)}"
