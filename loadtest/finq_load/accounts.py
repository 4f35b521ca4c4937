"""The accounts the simulated users submit as, and logging in outside Locust's statistics."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gevent.lock import Semaphore
from locust.exception import StopUser

from .target import stack_info

log = logging.getLogger("finq.loadtest")


class Accounts:
    """The accounts the simulated users submit as.

    With admin credentials (the stack's admin, or FINQ_USERNAME/FINQ_PASSWORD of an admin),
    LOADTEST_ACCOUNTS throwaway accounts (default 8) are created when a test starts and deleted
    when it stops, and the users take turns on them: the server's per-account limits
    (RATE_LIMIT_SUBMIT, RATE_LIMIT_GLOBAL) then apply to a few users each, as to real people,
    and the stack runs with its limits on. 8 accounts + the admin's login stay within the
    default login limit (10/minute per address; a 429 there is waited out). With an ordinary
    account, every user shares it. One token per account, fetched once and again on a 401.
    """

    def __init__(self) -> None:
        self.accounts: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.admin_token: str | None = None
        self.tokens: dict[str, str] = {}
        self._locks: dict[str, Semaphore] = {}
        self._next = 0

    @staticmethod
    def credentials() -> tuple[str, str]:
        user, password = os.environ.get("FINQ_USERNAME"), os.environ.get("FINQ_PASSWORD")
        if user and password:
            return user, password
        info = stack_info()
        if info.get("ADMIN_USERNAME") and info.get("ADMIN_PASSWORD"):
            return info["ADMIN_USERNAME"], info["ADMIN_PASSWORD"]
        raise SystemExit("no credentials: set FINQ_USERNAME/FINQ_PASSWORD or RUN_DIR")

    def setup(self, host: str, count: int) -> None:
        """Create the run's accounts (admin only); otherwise use the given account."""
        name, password = self.credentials()
        self.accounts = [(name, password)]
        self.tokens.clear()
        if count <= 0:
            return
        try:
            self.admin_token = login(host, name, password)
        except LoginFailed as exc:
            raise SystemExit(str(exc)) from None
        self.tokens[name] = self.admin_token
        run = secrets.token_hex(3)
        made: list[tuple[str, str]] = []
        for i in range(count):
            account = (f"locust-{run}-{i + 1}", secrets.token_urlsafe(18))
            status = _call(
                host,
                "POST",
                "/api/v1/users",
                self.admin_token,
                {"username": account[0], "password": account[1], "role": "user"},
            )
            if status == 403:
                log.info("%s is not an admin: every user submits as %s", name, name)
                return
            if status != 201:
                raise SystemExit(f"could not create load-test account {account[0]}: {status}")
            made.append(account)
            self.created.append(account[0])
        self.accounts = made
        log.info("%d load-test accounts created (locust-%s-*), deleted at the end", count, run)

    def teardown(self, host: str) -> None:
        for name in self.created:
            if self.admin_token is not None:
                _call(host, "DELETE", f"/api/v1/users/{name}", self.admin_token)
        self.created.clear()

    def pick(self) -> str:
        """The account of the next user (round robin)."""
        name = self.accounts[self._next % len(self.accounts)][0]
        self._next += 1
        return name

    def token(self, host: str, name: str, stale: str | None = None) -> str:
        """The account's token at `host` (the user's); a new one when `stale` is the one held."""
        lock = self._locks.setdefault(name, Semaphore())
        with lock:
            if self.tokens.get(name) is None or self.tokens.get(name) == stale:
                password = dict(self.accounts)[name]
                try:
                    self.tokens[name] = login(host, name, password)
                except LoginFailed as exc:
                    raise StopUser(str(exc)) from None
            return self.tokens[name]


def _call(host: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> int:
    """One request outside Locust's statistics (account set-up); the HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        host + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class LoginFailed(Exception):  # noqa: N818 - shown to the user as "could not log in ..."
    pass


def login(host: str, name: str, password: str) -> str:
    """A bearer token; the login limit (429) and a restarting replica (502/503) are waited
    out, up to ten tries. Outside Locust's statistics: a login is set-up, not load."""
    body = urllib.parse.urlencode({"username": name, "password": password}).encode()
    for _ in range(10):
        try:
            with urllib.request.urlopen(host + "/api/v1/auth/token", data=body, timeout=30) as resp:
                token: str = json.load(resp)["access_token"]
                return token
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 502, 503):
                raise LoginFailed(f"could not log in as {name}: {exc.code}") from None
            time.sleep(min(float(exc.headers.get("Retry-After") or 2), 30.0))
    raise LoginFailed(f"could not log in as {name}: still refused after ten tries")


ACCOUNTS = Accounts()
