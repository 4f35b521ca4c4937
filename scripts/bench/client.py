"""A minimal HTTP/1.1 keep-alive client and the two ways the benchmark submits with it.

The load generator must not be what we measure: httpx costs far more CPU per request, which on
a small machine is taken from the stack.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections import Counter


class HttpConn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        try:
            self.writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(body)}\r\n".encode()
                + headers
                + b"\r\n"
                + body
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            hdrs = {}
            for line in lines[1:]:
                if b":" in line:
                    k, v = line.split(b":", 1)
                    hdrs[k.strip().lower()] = v.strip().lower()
            if b"content-length" in hdrs:
                data = await self.reader.readexactly(int(hdrs[b"content-length"]))
            elif hdrs.get(b"transfer-encoding") == b"chunked":
                data = await self._chunked()
            else:
                data = await self.reader.read()
                self.close()
            if hdrs.get(b"connection") == b"close":
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def login(base: str, username: str, password: str) -> str:
    data = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/auth/token", data=data, timeout=30) as resp:
        token: str = json.load(resp)["access_token"]
    return token


def auth_headers(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()


async def submit_closed(
    port: int, token: str, bodies: list[bytes], concurrency: int
) -> tuple[float, Counter[int]]:
    """POST every body over `concurrency` keep-alive connections, as fast as answered.
    Returns the time of the first send and the count of answers by status."""
    statuses: Counter[int] = Counter()
    headers = auth_headers(token)
    pending = iter(bodies)
    started = time.time()

    async def lane() -> None:
        conn = HttpConn(port)
        for body in pending:
            try:
                status, _ = await conn.request("POST", "/api/v1/tasks", body, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = 0
            statuses[status] += 1
        conn.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return started, statuses


async def submit_open(
    port: int,
    token: str,
    body: bytes,
    rate: float,
    seconds: float,
    warmup: float,
    timeout: float = 10.0,
) -> tuple[list[float], Counter[int], int]:
    """Open loop: request i leaves at t0 + i/rate whatever the answers before it; latency is
    counted from that scheduled time (no coordinated omission). Requests in the first `warmup`
    seconds are not counted; one unanswered after `timeout` s counts as status -1 (and its
    latency as the timeout). Returns latencies (ms), statuses, connections opened."""
    headers = auth_headers(token)
    idle: list[HttpConn] = []
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    opened = 0

    async def one(at: float, counted: bool) -> None:
        nonlocal opened
        if idle:
            conn = idle.pop()
        else:
            conn = HttpConn(port)
            opened += 1
        try:
            status, _ = await asyncio.wait_for(
                conn.request("POST", "/api/v1/tasks", body, headers), timeout
            )
        except TimeoutError:
            status = -1
            conn.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
        else:
            idle.append(conn)
        if counted:
            statuses[status] += 1
            latencies.append((time.perf_counter() - at) * 1000.0)

    t0 = time.perf_counter() + 0.05
    total = int((seconds + warmup) * rate)
    running = []
    for i in range(total):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        running.append(asyncio.create_task(one(at, i >= warmup * rate)))
    await asyncio.gather(*running)
    for conn in idle:
        conn.close()
    return latencies, statuses, opened
