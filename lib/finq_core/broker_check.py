"""Is the Redis the stack uses safe for queues? Checked when api, worker and beat start
(deploy/finq-service runs `python -m finq_core.broker_check`) and by /health/ready.

Redis holds the messages; the database holds every task. A Redis that evicts keys drops
messages without a word (and with them kombu's bindings and unacknowledged hash), and one
without AOF loses every queued message when it restarts. The beat queues such tasks again
from the database (finq_core.repair), but only after the fact: the settings should make that
rare. Safe: `noeviction`, or a `volatile-*` policy while no queue key carries a TTL.
"""

import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from finq_core import broker
from finq_core.config import get_settings

MARKER = "finq:broker:marker"  # finq_core.repair's; here to be checked beside the queues


@dataclass(frozen=True)
class Durability:
    policy: str | None = None
    aof: bool | None = None
    evicting: bool = False
    problems: list[str] = field(default_factory=list)


def queue_keys() -> list[str]:
    """Keys whose loss loses messages: the queues, the unacknowledged hash, the marker."""
    lists = [key for name in broker.ALL_QUEUES for key in broker.queue_keys(name)]
    return [*lists, broker.UNACKED_KEY, broker.UNACKED_INDEX_KEY, MARKER]


def check(r: "redis.Redis") -> Durability:
    """What this Redis would do to queued messages; raises redis errors when unreachable."""
    try:
        policy = _config(r, "maxmemory-policy")
        aof = _config(r, "appendonly") == "yes"
    except redis.ResponseError as exc:  # managed services often refuse CONFIG
        return Durability(problems=[f"Redis' settings are unknown (CONFIG GET refused: {exc})"])
    problems: list[str] = []
    evicting = policy.startswith("allkeys-")
    if policy.startswith("volatile-"):
        keys = queue_keys()
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        expiring = [k for k, ttl in zip(keys, pipe.execute(), strict=True) if int(ttl) >= 0]
        if expiring:
            evicting = True
            names = ", ".join(repr(k) for k in expiring)
            problems.append(f"maxmemory-policy {policy} may evict queue keys with a TTL: {names}")
    if evicting and not problems:
        problems.append(
            f"maxmemory-policy {policy} evicts keys, queued messages among them: "
            "set maxmemory-policy noeviction"
        )
    if not aof:
        problems.append(
            "appendonly is off: a restart of Redis loses every queued message "
            "(the beat queues them again from the database): set appendonly yes"
        )
    return Durability(policy, aof, evicting, problems)


def _config(r: "redis.Redis", name: str) -> str:
    value = cast(dict[str, Any], r.config_get(name)).get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def preflight(attempts: int = 3) -> int:
    """Exit status for deploy/finq-service: 2 when APP_ENV=production and Redis evicts keys;
    warnings on stderr otherwise. An unreachable Redis is not checked (the services wait for
    it and answer 503 meanwhile)."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=2)
    for attempt in range(attempts):
        try:
            found = check(client)
            break
        except (redis.RedisError, OSError) as exc:
            if attempt == attempts - 1:
                print(f"finq: warning: Redis' settings not checked: {exc}", file=sys.stderr)
                return 0
            time.sleep(1)
    for problem in found.problems:
        print(f"finq: warning: {problem}", file=sys.stderr)
    if found.evicting and settings.app_env == "production":
        print(
            "finq: refusing to start: APP_ENV=production needs a Redis that never evicts queued "
            f"messages (maxmemory-policy is {found.policy}; set noeviction)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(preflight())
