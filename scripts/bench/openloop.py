"""Open-loop load: requests leave on a fixed clock whatever the answers before them, and each
latency counts from its scheduled time, so a slow answer cannot hide the ones queued behind
it (no coordinated omission). Several streams (say submits, GETs and health probes) share one
clock and one pool of keep-alive connections."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass

from .client import HttpConn

# Status recorded for a request with no answer within the timeout, and for a broken connection.
UNANSWERED = -1
BROKEN = 0


@dataclass(frozen=True)
class Stream:
    """Requests of one kind sent at a fixed rate; `ok` is the status that counts as success."""

    name: str
    method: str
    path: str
    rate: float
    body: bytes = b""
    ok: int = 200


@dataclass(frozen=True)
class Send:
    at: float  # seconds after the start
    stream: int  # index into the streams
    counted: bool  # False during the warm-up


@dataclass(frozen=True)
class Summary:
    """One stream's counted requests: latency percentiles (ms) and the answers by status."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float
    statuses: dict[int, int]
    ok: int

    @property
    def unanswered(self) -> int:
        return self.statuses.get(UNANSWERED, 0)

    @property
    def errors(self) -> int:
        """Answered, or broken, with another status than the expected one."""
        return sum(v for k, v in self.statuses.items() if k not in (self.ok, UNANSWERED))


@dataclass
class Outcome:
    """What one open-loop run measured: a summary per stream, how late the sender itself was
    (already inside every latency: it counts from the schedule), connections opened."""

    summaries: dict[str, Summary]
    lag_ms_max: float
    connections: int


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated linearly between order statistics (NumPy's default);
    NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(latencies: list[float], statuses: Counter[int], ok: int) -> Summary:
    return Summary(
        n=len(latencies),
        p50=pct(latencies, 50),
        p95=pct(latencies, 95),
        p99=pct(latencies, 99),
        max=max(latencies) if latencies else math.nan,
        statuses=dict(statuses),
        ok=ok,
    )


def schedule(streams: list[Stream], seconds: float, warmup: float) -> list[Send]:
    """Every request of a run, in time order: stream k sends its i-th request at
    (i + k / len(streams)) / rate, for warmup + seconds; those in the warm-up are not counted.
    The offset k / len(streams) keeps the streams from always colliding on the same tick."""
    sends: list[Send] = []
    end = warmup + seconds
    for k, s in enumerate(streams):
        phase = k / len(streams)
        i = 0
        while (at := (i + phase) / s.rate) < end - 1e-9:
            sends.append(Send(at, k, at >= warmup - 1e-9))
            i += 1
    sends.sort(key=lambda x: x.at)
    return sends


async def run_open_loop(
    port: int, headers: bytes, streams: list[Stream], seconds: float, warmup: float, timeout: float
) -> Outcome:
    """Send `streams` through 127.0.0.1:`port` on their schedule; a request unanswered after
    `timeout` s counts as UNANSWERED with the timeout as its latency."""
    idle: list[HttpConn] = []
    latencies: list[list[float]] = [[] for _ in streams]
    statuses: list[Counter[int]] = [Counter() for _ in streams]
    opened = 0
    lag = 0.0

    async def one(send: Send, due: float) -> None:
        nonlocal opened
        stream = streams[send.stream]
        if idle:
            conn = idle.pop()
        else:
            conn = HttpConn(port)
            opened += 1
        try:
            status, _ = await asyncio.wait_for(
                conn.request(stream.method, stream.path, stream.body, headers), timeout
            )
        except TimeoutError:
            status = UNANSWERED
            conn.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = BROKEN
        else:
            idle.append(conn)
        if send.counted:
            statuses[send.stream][status] += 1
            latencies[send.stream].append((time.perf_counter() - due) * 1000.0)

    t0 = time.perf_counter() + 0.05
    running = []
    for send in schedule(streams, seconds, warmup):
        due = t0 + send.at
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        running.append(asyncio.create_task(one(send, due)))
    await asyncio.gather(*running)
    for conn in idle:
        conn.close()
    return Outcome(
        {s.name: summarize(latencies[k], statuses[k], s.ok) for k, s in enumerate(streams)},
        lag * 1000.0,
        opened,
    )
