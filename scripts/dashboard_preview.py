#!/usr/bin/env python3
"""`make dashboard-preview`: the Grafana dashboard's panels, drawn from a real Prometheus.

Grafana cannot be installed on the build machines, so this stands in for its screenshot and
proves the dashboard's queries: a local stack scraped by Debian's Prometheus as in compose, two
minutes of traffic through nginx (some throttled, some timing out), then every query of
deploy/monitoring/grafana/dashboards/finq-overview.json drawn where the dashboard puts it.
Writes docs/screenshots/dashboard.png; exits 1 if a panel that must have data got none.

Everything it starts is stopped at the end, whatever happens. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "finq-overview.json"
OUT = ROOT / "docs" / "screenshots" / "dashboard.png"
RUN_DIR = ROOT / ".run" / "dashboard-preview"
VENV_PY = Path(sys.executable)
LOAD_SECONDS = float(os.environ.get("PREVIEW_LOAD_SECONDS", "120"))
STEP_SECONDS = 5
# Panels that must show data after the traffic above (the others may legitimately be empty:
# no retries happen unless Redis or the database fail).
MUST_HAVE_DATA = (
    "Completed tasks / s by type",
    "Submit latency (POST /api/v1/tasks)",
    "Worker utilisation",
    "HTTP requests / s by status",
    "Targets up",
    "Task run time p50 / p95 by type",
    "Queue wait p95 by priority",
)
PASSWORD = "preview-password-1234"


def log(msg: str) -> None:
    print(f"[dashboard-preview {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localstack(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [str(VENV_PY), str(ROOT / "scripts" / "localstack.py"), *args],
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
    )


def prometheus_config(info: dict[str, str]) -> str:
    """The compose profile's jobs, with the local stack's ports instead of DNS discovery."""
    api = [f"127.0.0.1:{p}" for p in info["API_PORTS"].split(",")]
    workers = [f"127.0.0.1:{p}" for p in info["WORKER_METRICS_PORTS"].split(",")]
    return json.dumps(
        {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [
                {
                    "job_name": "api",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": api}],
                },
                {
                    "job_name": "workers",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": workers}],
                },
            ],
        }
    )


def traffic(base: str, admin: tuple[str, str], until: float, errors: list[str]) -> None:
    """Four accounts submitting a mix (light tasks and 0.3 s Monte Carlo runs) as fast as
    their submit limit allows, plus three Monte Carlo runs past the time limit (FAILED)."""
    with httpx.Client(base_url=base, timeout=30) as c:
        token = c.post(
            "/api/v1/auth/token", data={"username": admin[0], "password": admin[1]}
        ).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        tokens = [token]
        for i in range(4):  # three more submitters, and one account for the failing tasks
            name = f"preview{i}"
            c.post("/api/v1/users", json={"username": name, "password": PASSWORD})
            resp = c.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
            tokens.append(resp.json()["access_token"])
    bodies = [
        {
            "type": "loan_amortization",
            "params": {"principal": 250000, "annual_rate": 0.05, "years": 30},
        },
        {
            "type": "bond_analytics",
            "params": {
                "face_value": 1000,
                "coupon_rate": 0.04,
                "maturity": 10,
                "frequency": 2,
                "yield": 0.05,
            },
        },
        {
            "type": "black_scholes",
            "params": {
                "spot": 100,
                "strike": [90, 100, 110],
                "maturity": 1,
                "rate": 0.03,
                "volatility": 0.2,
                "option_type": "call",
            },
        },
        {
            "type": "monte_carlo_option",
            "params": {
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.03,
                "volatility": 0.2,
                "option_type": "call",
                "style": "asian_arithmetic",
                "paths": 40_000,
                "steps": 252,
                "seed": 1,
            },
        },
    ]
    slow = {
        "type": "monte_carlo_option",
        "priority": "low",
        "params": {
            "spot": 100,
            "strike": 100,
            "maturity": 1,
            "rate": 0.03,
            "volatility": 0.2,
            "option_type": "call",
            "style": "asian_arithmetic",
            "paths": 6_000_000,
            "steps": 252,
            "seed": 2,
        },
    }

    def user(tok: str, k: int) -> None:
        with httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {tok}"}
        ) as c:
            i = k
            while time.time() < until:
                resp = c.post("/api/v1/tasks", json=bodies[i % len(bodies)])
                i += 1
                if resp.status_code == 429:
                    time.sleep(float(resp.headers.get("Retry-After", "1")) / 4)
                elif resp.status_code not in (200, 202):
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
                    return
                time.sleep(0.15)

    def failing() -> None:
        # After Prometheus has seen the counters at zero, so that their rate shows.
        time.sleep(min(30.0, LOAD_SECONDS / 4))
        with httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {tokens[-1]}"}
        ) as c:
            for _ in range(3):
                resp = c.post("/api/v1/tasks", json=slow)
                if resp.status_code != 202:
                    errors.append(f"{resp.status_code} {resp.text[:200]}")

    threads = [
        threading.Thread(target=user, args=(t, k), daemon=True) for k, t in enumerate(tokens[:-1])
    ]
    threads.append(threading.Thread(target=failing, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS + 60)


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": STEP_SECONDS})
    resp = httpx.get(f"{prom}/api/v1/query_range?{q}", timeout=30)
    resp.raise_for_status()
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


def legend(fmt: str | None, labels: dict[str, str], fallback: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or fallback
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def draw(
    panels: list[dict[str, Any]],
    data: dict[str, list[tuple[str, list[Any]]]],
    start: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * 0.55 + 1.0), dpi=80, facecolor="#111217")
    grid = fig.add_gridspec(
        rows,
        24,
        left=0.04,
        right=0.99,
        top=1 - 1.0 / (rows * 0.55 + 1.0),
        bottom=0.03,
        hspace=3.2,
        wspace=2.0,
    )
    fig.suptitle(title, color="#ccccdc", fontsize=12, x=0.01, ha="left")
    palette = [
        "#73bf69",
        "#f2cc0c",
        "#8ab8ff",
        "#ff780a",
        "#f2495c",
        "#5794f2",
        "#b877d9",
        "#fade2a",
        "#37872d",
        "#c4162a",
    ]
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        ax.grid(color="#2c3235", lw=0.6)
        unit = (p.get("fieldConfig") or {}).get("defaults", {}).get("unit", "")
        ax.set_title(
            p["title"] + (f"  [{unit}]" if unit else ""), color="#ccccdc", fontsize=10, loc="left"
        )
        series = data.get(p["title"], [])
        for i, (name, values) in enumerate(series[:10]):
            # matplotlib takes datetimes through its date units; its stubs only say numbers.
            xs: list[Any] = [datetime.fromtimestamp(float(t), UTC) for t, _ in values]
            ys = [float(v) if v not in ("NaN", "+Inf", "-Inf") else float("nan") for _, v in values]
            ax.plot(xs, ys, lw=1.6, color=palette[i % len(palette)], label=name)
        if series:
            ax.legend(
                fontsize=7,
                loc="upper left",
                facecolor="#181b1f",
                edgecolor="#2c3235",
                labelcolor="#ccccdc",
                ncol=2,
            )
        else:
            ax.text(
                0.5,
                0.5,
                "No data",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#9fa7b3",
                fontsize=11,
            )
            left: Any = datetime.fromtimestamp(start, UTC)
            right: Any = datetime.now(UTC)
            ax.set_xlim(left, right)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.set_ylim(bottom=0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, facecolor=fig.get_facecolor())
    plt.close(fig)


def prometheus_version(prometheus: str) -> str:
    return (
        subprocess.run([prometheus, "--version"], capture_output=True, text=True)
        .stdout.split("\n")[0]
        .strip()
    )


def launch_prometheus(
    prometheus: str, info: dict[str, Any], tmp: Path, port: int
) -> subprocess.Popen[bytes]:
    """Prometheus scraping the stack of `info`, its data and log under `tmp`."""
    (tmp / "prometheus.yml").write_text(prometheus_config(info))
    return subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("w"),
    )


def wait_ready(prom: str, proc: subprocess.Popen[bytes], tmp: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(
                "prometheus did not start: " + (tmp / "prometheus.log").read_text()[-2000:]
            )
        time.sleep(0.5)


def drive_traffic(base: str, info: dict[str, Any]) -> tuple[float, float]:
    """LOAD_SECONDS of traffic, then time for the last tasks to finish and be scraped; the
    window to query."""
    start = time.time()
    log(f"{LOAD_SECONDS:.0f} s of traffic through nginx")
    errors: list[str] = []
    traffic(base, (info["ADMIN_USERNAME"], info["ADMIN_PASSWORD"]), start + LOAD_SECONDS, errors)
    if errors:
        raise RuntimeError(f"submissions refused: {errors[:3]}")
    time.sleep(15)  # the last tasks finish and get scraped
    return start, time.time()


def query_panels(
    prom: str, panels: list[dict[str, Any]], start: float, end: float
) -> dict[str, list[tuple[str, list[Any]]]]:
    """Every target of every panel over [start, end]: (legend, values) by panel title."""
    data: dict[str, list[tuple[str, list[Any]]]] = {}
    for p in panels:
        series = []
        for t in p.get("targets", []):
            for r in query_range(prom, t["expr"], start, end):
                series.append(
                    (
                        legend(t.get("legendFormat"), r["metric"], t.get("refId", "")),
                        r["values"],
                    )
                )
        data[p["title"]] = series
        log(f"  {p['title']}: {len(series)} series")
    return data


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(prometheus).exists():
        print(
            "dashboard-preview: Debian's prometheus is not installed (make install)",
            file=sys.stderr,
        )
        return 2
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") == "timeseries"]
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="finq-prometheus-"))
    prom_proc: subprocess.Popen[bytes] | None = None
    log("starting a local stack (3 API replicas, 2 workers x 2)")
    localstack(
        "up",
        "--run-dir",
        str(RUN_DIR),
        "--free-ports",
        "--api-replicas",
        "3",
        "--worker-replicas",
        "2",
        env={
            "WORKER_CONCURRENCY": "2",
            "DEFAULT_TASK_TIMEOUT": "5",
            "RATE_LIMIT_SUBMIT": "60/minute",
        },
    )
    try:
        info = json.loads((RUN_DIR / "stack.json").read_text())
        base = f"http://127.0.0.1:{info['HTTP_PORT']}"
        port = free_port()
        prom = f"http://127.0.0.1:{port}"
        version = prometheus_version(prometheus)
        log(f"starting {version} on {prom}")
        prom_proc = launch_prometheus(prometheus, info, tmp, port)
        wait_ready(prom, prom_proc, tmp)
        start, end = drive_traffic(base, info)
        data = query_panels(prom, panels, start, end)
        draw(
            panels,
            data,
            start,
            f"{dashboard.get('title', 'finq')}: every panel of finq-overview.json, queried "
            f"from {version.split(' (')[0]} scraping a local stack "
            f"({time.strftime('%Y-%m-%d %H:%M')}; drawn by make dashboard-preview)",
        )
        log(f"written {OUT.relative_to(ROOT)}")
        empty = [t for t in MUST_HAVE_DATA if not data.get(t)]
        if empty:
            log(f"FAILED: no data for {empty}")
            return 1
        return 0
    finally:
        if prom_proc is not None:
            prom_proc.terminate()
            try:
                prom_proc.wait(30)
            except subprocess.TimeoutExpired:
                prom_proc.kill()
        localstack("down", "--run-dir", str(RUN_DIR))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
