"""Real receivers for notifications, and the stack that is allowed to reach them.

`receiver` is a threaded http.server on 127.0.0.1 that records every request and answers what
a test scripted for its path (e.g. 500 then 200). `mailbox` is a real SMTP server (aiosmtpd)
with a login. `notify_stack` is a local stack with WEBHOOK_ALLOW_PRIVATE=true (the receivers
are on loopback) and SMTP_* pointing at the mailbox; the shared `stack` keeps the production
default (false), against which loopback webhooks are refused.

The browser tests' fixtures: `browser` (Debian's headless Chromium), `accounts` (alice and
bob, new on the shared stack), `alice_api` and `page` (the browser logged in as alice), one
of each per test module.
"""

import http.server
import json
import shutil
import tempfile
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.browser import CHROMEDRIVER, CHROMIUM, DESKTOP, shot, until
from tests.e2e.client import login
from tests.mailserver import SMTP_PASSWORD, SMTP_USER, Mailbox, smtp_server


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records POSTs; answers the next scripted status for a path (200 when none is left)."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_path(self, *statuses: int) -> str:
        path = f"/hook/{uuid.uuid4().hex}"
        with self.lock:
            self.scripts[path] = list(statuses)
        return path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                script = receiver.scripts.get(self.path)
                status = script.pop(0) if script else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    rec.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server(auth_require_tls=False) as box:
        yield box


@pytest.fixture(scope="session")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The stack that the fault and batch tests break (workers killed, Redis restarted), shared
    by both modules: each test waits for what it broke to be whole again.

    A 10 s hard limit makes the broker's visibility timeout 30 s: a message whose whole worker
    died comes back within that, instead of minutes."""
    s = start_stack(
        tmp_path_factory.mktemp("fragile") / "run",
        "--api-replicas",
        "2",
        "--worker-replicas",
        "2",
        env={
            "WORKER_CONCURRENCY": "2",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "DEFAULT_TASK_TIMEOUT": "10",
            "QUOTA_QUEUED_TASKS": "1000",  # 500 queued at once
        },
    )
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def notify_stack(
    mailbox: Mailbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("notify") / "run",
        "--api-replicas",
        "1",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "2",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "DEFAULT_TASK_TIMEOUT": "20",
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "SCHEDULE_MIN_INTERVAL": "1",  # a schedule runs every 2 s
            "NOTIFY_MAX_ATTEMPTS": "3",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mailbox.port),
            "SMTP_TLS": "none",
            "SMTP_USERNAME": SMTP_USER,
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "SMTP_FROM": "finq@test.example",
        },
    )
    yield s
    stop_stack(s)


def new_user(admin: httpx.Client, password: str = "correct horse battery") -> tuple[str, str]:
    """A fresh account on the admin's stack: (username, password)."""
    name = f"u{uuid.uuid4().hex[:10]}"
    resp = admin.post("/api/v1/users", json={"username": name, "password": password})
    assert resp.status_code == 201, resp.text
    return name, password


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: run `make install`")
    profile = tempfile.mkdtemp(prefix="finq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts(stack: LocalStack) -> dict[str, tuple[str, str]]:
    admin = login(stack.url, *stack.admin)
    return {"alice": new_user(admin), "bob": new_user(admin)}


@pytest.fixture(scope="module")
def alice_api(stack: LocalStack, accounts: dict[str, tuple[str, str]]) -> httpx.Client:
    return login(stack.url, *accounts["alice"])


@pytest.fixture(scope="module")
def page(browser: WebDriver, stack: LocalStack, accounts: dict[str, tuple[str, str]]) -> WebDriver:
    """The browser, logged in as alice through the login form."""
    browser.get(stack.url + "/")
    until(browser, lambda d: d.find_element(By.ID, "login-username").is_displayed())
    shot(browser, "login")
    username, password = accounts["alice"]
    browser.find_element(By.ID, "login-username").send_keys(username)
    browser.find_element(By.ID, "login-password").send_keys(password)
    browser.find_element(By.ID, "login-submit").click()
    until(browser, lambda d: d.find_element(By.ID, "whoami").text == username)
    assert browser.find_element(By.ID, "view-tasks").is_displayed()
    return browser
