"""The load test's own command-line options (also shown in the web UI)."""

from __future__ import annotations

from typing import Any


def add_options(parser: Any) -> None:
    parser.add_argument(
        "--finq-follow",
        choices=["sse", "poll"],
        default="sse",
        env_var="FINQ_FOLLOW",
        help="follow tasks over SSE (default) or by polling GET /tasks/{id} with backoff",
    )
    parser.add_argument(
        "--finq-min-tasks-per-sec",
        type=float,
        default=0.0,
        env_var="MIN_TASKS_PER_SEC",
        help="exit non-zero below this many completed tasks/s (0: no minimum)",
    )
    parser.add_argument(
        "--finq-summary",
        default="",
        env_var="FINQ_SUMMARY",
        help="write the task summary (JSON) here; default: next to the CSVs",
    )
    parser.add_argument(
        "--finq-task-timeout",
        type=float,
        default=330.0,
        env_var="FINQ_TASK_TIMEOUT",
        help="give up following one task after this many seconds (lost)",
    )
    parser.add_argument(
        "--finq-types",
        default="",
        env_var="FINQ_TYPES",
        help="comma-separated subset of the mix's types (default: all)",
    )
    parser.add_argument(
        "--finq-mix-scale",
        default="auto",
        env_var="MIX_SCALE",
        help="size the heavy rows for this machine: auto (time them here at "
        "start-up), a factor, or 1 (the table's sizes)",
    )
