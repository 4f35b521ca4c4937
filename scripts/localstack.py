#!/usr/bin/env python3
"""The local stack: the compose topology as plain processes under supervisor.

    localstack.py up [--api-replicas N] [--worker-replicas N] [--http-port P] ...
    localstack.py down | status | logs | env

Same nginx configuration (nginx/finq.conf.template), same service commands
(deploy/finq-service), same environment variables as docker-compose.yml; its own redis-server
(AOF on) and SQLite database, everything under one runtime folder (default .run/). The tests
start throwaway stacks on free ports through this same script.

This file is the command line; _localstack_settings.py resolves ports, secrets and the
services' environment, _localstack_render.py writes the configuration files and
_localstack_control.py runs the processes under supervisord.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _localstack_control import Stack
from _localstack_settings import ROOT, public_url


def _print_urls(s: dict[str, str]) -> None:
    base = public_url(s)
    flower_user, _, flower_pw = s["FLOWER_BASIC_AUTH"].partition(":")
    print(f"""
finq is up in {s.get("STARTUP_SECONDS", "?")} s ({s["API_REPLICAS"]} API replicas, \
{s["WORKER_REPLICAS"]} workers x {s["WORKER_CONCURRENCY"]} processes)
  web page / API   {base}/
  Swagger UI       {base}/docs
  health           {base}/health/ready
  Flower           {base}/flower/  and  http://127.0.0.1:{s["FLOWER_PORT"]}/flower/ \
(user {flower_user}, password {flower_pw})
  admin account    {s["ADMIN_USERNAME"]} / {s["ADMIN_PASSWORD"]}
  runtime folder   {s["RUN_DIR"]}   (logs: make logs, processes: make status)
""")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "logs", "env"])
    parser.add_argument("--run-dir", default=os.environ.get("RUN_DIR", str(ROOT / ".run")))
    parser.add_argument("--api-replicas", type=int)
    parser.add_argument("--worker-replicas", type=int)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--api-base-port", type=int)
    parser.add_argument("--flower-port", type=int)
    parser.add_argument("--free-ports", action="store_true", help="pick free ports (tests)")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    stack = Stack(Path(args.run_dir))
    if args.command == "up":
        _print_urls(stack.up(args))
    elif args.command == "down":
        stack.down()
    elif args.command == "status":
        if not stack.running():
            print(f"no stack running from {stack.run_dir}")
            return 3
        out = stack.supervisorctl("status")
        print(out.stdout, end="")
    elif args.command == "logs":
        logs = sorted((stack.run_dir / "logs").glob("*.log"))
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])
    elif args.command == "env":
        print(stack.state_file.read_text() if stack.state_file.exists() else "{}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
