"""The rate limits' counters in Redis (the `limits` library), shared by every process that
counts: the API's limits (finq_api.ratelimit) and the beat, whose schedule runs count against
their owner's submit limit (RATE_LIMIT_SUBMIT) exactly as the API's submissions do."""

import logging
import math
import time
from functools import lru_cache

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from finq_core.config import Settings, get_settings

log = logging.getLogger("finq.ratelimit")

SUBMIT_SCOPE = "submit"


@lru_cache
def limiter() -> SlidingWindowCounterRateLimiter:
    url = get_settings().redis_url
    storage = RedisStorage(url, socket_timeout=1, socket_connect_timeout=1)
    return SlidingWindowCounterRateLimiter(storage)


@lru_cache
def item(spec: str) -> RateLimitItem:
    return parse(spec)


def hit_submit(owner: str, settings: Settings) -> int | None:
    """Count one submission of `owner` against RATE_LIMIT_SUBMIT: None when allowed, else the
    seconds until one more is. Limits off, or Redis unreachable: allowed (fails open, as the
    API's submit limit does), logged."""
    if not settings.rate_limit_enabled:
        return None
    limit = item(settings.rate_limit_submit)
    try:
        if limiter().hit(limit, SUBMIT_SCOPE, owner):
            return None
        stats = limiter().get_window_stats(limit, SUBMIT_SCOPE, owner)
    except (redis.RedisError, OSError) as exc:
        log.warning("rate limiter unavailable (%s); allowing %s", type(exc).__name__, owner)
        return None
    return max(1, math.ceil(stats.reset_time - time.time()))
