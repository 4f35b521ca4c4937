#!/usr/bin/env python3
"""`make bench`: the full-stack benchmark. Its code is the package scripts/bench/, imported
from this script's folder (`python scripts/bench_stack.py --help` for what it measures)."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
