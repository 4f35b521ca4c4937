"""Smoke test of the load test: loadtest/locustfile.py, headless, against the e2e stack.

A few seconds with three users submitting the whole mix: proves that every row of the mix is
accepted by the engine's models, that users log in, follow their tasks to the end over SSE and
that the task summary (completed, failed, lost) is written. No timing is asserted: the machine
running the tests may be busy.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, STACK_ENV_DROP, VENV_BIN, LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_locust_mix_completes_every_task(stack: LocalStack, tmp_path: Path) -> None:
    summary_path = tmp_path / "tasks.json"
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV_DROP}
    env.update(FINQ_USERNAME=stack.admin[0], FINQ_PASSWORD=stack.admin[1])
    env.pop("MIN_TASKS_PER_SEC", None)
    proc = subprocess.run(
        [
            str(VENV_BIN / "locust"),
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "--host",
            stack.url,
            "--users",
            "3",
            "--spawn-rate",
            "3",
            "--run-time",
            "5s",
            "--stop-timeout",
            "90",
            "--only-summary",
            "--finq-summary",
            str(summary_path),
            "--finq-min-tasks-per-sec",
            "0",
            "--csv",
            str(tmp_path / "locust"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary_path.exists(), output
    summary = json.loads(summary_path.read_text())

    assert summary["completed"] > 0, output
    assert summary["failed"] == 0, summary["failures"]
    assert summary["lost"] == 0, summary["lost_ids"]
    assert summary["rejected"] == 0, summary["rejected_by_status"]
    assert summary["completed"] == summary["submitted"]
    # MIX_SCALE=auto (the default) timed the heavy rows here and sized them for this machine.
    factors = dict(p.split("=") for p in summary["mix_scale"].split(","))
    assert set(factors) == {"portfolio_var", "monte_carlo_option"}, summary["mix_scale"]
    assert all(0 < float(f) < 100 for f in factors.values()), summary["mix_scale"]
    assert proc.returncode == 0, output
    # Every finished task is its own Locust entry: request type TASK, "<type> done".
    stats = (tmp_path / "locust_stats.csv").read_text()
    assert "TASK," in stats and " done," in stats
