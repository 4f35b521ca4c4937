"""finq_queue_depth, read from a real Redis at scrape time, covers every queue the workers
consume: the calculation queues and the deliveries (notify) and charts queues."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from finq_core import metrics
from finq_core.broker import ALL_QUEUES, queue_keys
from finq_core.config import get_settings
from finq_core.redis_client import get_redis
from tests.conftest import start_redis, stop_process
from tests.helpers import free_port


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    get_redis.cache_clear()
    try:
        yield redis.Redis(port=port)
    finally:
        stop_process(proc)
        monkeypatch.undo()
        get_settings.cache_clear()
        get_redis.cache_clear()


def test_the_queue_depth_metric_reports_every_queue(own_redis: redis.Redis) -> None:
    # A different count on each queue, some of it on kombu's priority sub-lists.
    for n, name in enumerate(ALL_QUEUES, start=1):
        keys = queue_keys(name)
        own_redis.lpush(keys[0], *[b"m"] * n)
        own_redis.lpush(keys[-1], b"m")
    collected = metrics.QueueCollector().collect()
    samples = {s.labels["queue"]: s.value for family in collected for s in family.samples}
    assert samples == {name: n + 1 for n, name in enumerate(ALL_QUEUES, start=1)}
    assert {"notify", "charts", "high", "normal", "low"} == set(samples)
    exposed = metrics.exposition(with_queues=True).decode()
    families = {f.name: f for f in text_string_to_metric_families(exposed)}
    assert {s.labels["queue"] for s in families["finq_queue_depth"].samples} == set(ALL_QUEUES)
