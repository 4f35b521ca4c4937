"""Prometheus configuration, alert rules (with promtool, Debian's prometheus package) and the
Grafana dashboard are valid, and every metric they use is one the code exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from finq_core import metrics

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not Path("/usr/bin/promtool").exists(),
    reason="promtool missing: `make install` installs Debian's prometheus package",
)


def exported_names() -> set[str]:
    names = {"finq_queue_depth", "up"}
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and hasattr(value, "_name"):
            for family in describe():
                base = family.name
                names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def used_names(expr: str) -> set[str]:
    return {n for n in re.findall(r"\b(finq_[a-z_]+|up)\b", expr)}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL or "/usr/bin/promtool", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_promtool
def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(MON / "alerts.yml", tmp_path / "alerts.yml")
    config = (
        (MON / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    )
    (tmp_path / "prometheus.yml").write_text(config)
    out = run("check", "config", "prometheus.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    out = run("check", "rules", "alerts.yml", cwd=MON)
    assert out.returncode == 0, out.stdout + out.stderr
    out = run("test", "rules", "alerts_test.yml", cwd=MON)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_use_exported_metrics() -> None:
    text = (MON / "alerts.yml").read_text()
    exprs = re.findall(r"expr: (.*(?:\n {10,}.*)*)", text)
    assert len(exprs) >= 5
    unknown = set().union(*(used_names(e) for e in exprs)) - exported_names()
    assert not unknown, unknown


def test_dashboard_is_valid_and_uses_exported_metrics() -> None:
    dash = json.loads((MON / "grafana" / "dashboards" / "finq-overview.json").read_text())
    assert dash["uid"] and dash["title"]
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("completed", "latency", "queue", "utilisation", "fail", "retr"):
        assert topic in titles, topic
    for p in panels:
        assert p["targets"], p["title"]
        for target in p["targets"]:
            unknown = used_names(target["expr"]) - exported_names()
            assert not unknown, (p["title"], unknown)
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    """Each compose service running the api, worker or beat role (its replicas found by DNS)
    is a target: the `high` profile's worker included."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    scraped = {
        name
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    serving = {
        name
        for name, service in compose["services"].items()
        if service.get("command") in (["api"], ["worker"], ["beat"])
    }
    assert "celery-worker-high" in serving
    assert serving - scraped == set(), f"not scraped: {sorted(serving - scraped)}"


def test_the_queue_depth_metric_covers_every_queue() -> None:
    """finq_queue_depth reads the queues the workers consume, deliveries and charts included."""
    from finq_core.broker import ALL_QUEUES, CHART_QUEUE, DELIVERY_QUEUE, make_celery
    from finq_core.config import get_settings

    declared = {q.name for q in make_celery(get_settings()).conf.task_queues}
    assert {DELIVERY_QUEUE, CHART_QUEUE} <= set(ALL_QUEUES)
    assert set(ALL_QUEUES) == declared
