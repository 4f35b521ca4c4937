"""A minimal HTTP/1.1 keep-alive client and the ways the benchmark submits with it (the open
loop is in openloop.py).

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


def create_account(base: str, admin_token: str, username: str, password: str) -> None:
    """A plain user account, made by the admin (POST /api/v1/users)."""
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/users",
        data=body,
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating {username} answered {resp.status}")


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


async def submit_one(port: int, token: str, body: bytes) -> str:
    """POST one task; its id (the benchmark reads it back under load)."""
    conn = HttpConn(port)
    try:
        status, data = await conn.request("POST", "/api/v1/tasks", body, auth_headers(token))
    finally:
        conn.close()
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {data[:200]!r}")
    task_id: str = json.loads(data)["id"]
    return task_id
