"""docker-compose.yml gives the serving path CPU priority over the calculations: on shared
cores every worker container weighs less than the API and nginx (cpu_shares; WORKER_NICE only
acts inside a worker's own container)."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVING = ("fastapi-app", "nginx")
WORKERS = ("celery-worker", "celery-worker-high")
DOCKER_DEFAULT_SHARES = 1024


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(loaded["services"])


def shares(service: dict[str, Any]) -> int:
    return int(service.get("cpu_shares", DOCKER_DEFAULT_SHARES))


def test_every_worker_weighs_at_most_an_eighth_of_the_serving_path() -> None:
    svc = services()
    for worker in WORKERS:
        for serving in SERVING:
            assert shares(svc[worker]) * 8 <= shares(svc[serving]), (worker, serving)


def test_the_serving_path_keeps_at_least_dockers_default_weight() -> None:
    svc = services()
    assert all(shares(svc[name]) >= DOCKER_DEFAULT_SHARES for name in SERVING)
