"""The process's one Redis client, shared by live changes, flags, presence and queue depths."""

from functools import lru_cache

import redis

from finq_core.config import get_settings


@lru_cache
def get_redis() -> "redis.Redis":
    """One client (with its own connection pool) per process; created lazily after fork."""
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        decode_responses=True,
    )
