"""Fixtures of the compose smoke suite (tests/compose), run by scripts/test-compose.sh.

The script brings the stack up under a unique project name and passes it here through the
environment. Without FINQ_COMPOSE_URL (a plain `pytest` run) every test here is skipped; the
default `make test` run leaves this folder out anyway (--ignore=tests/compose).

All traffic goes to 127.0.0.1: nginx's published port (FINQ_COMPOSE_URL) and nothing else;
the docker CLI is used only to list and kill the project's own containers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

HERE = Path(__file__).resolve().parent
URL = os.environ.get("FINQ_COMPOSE_URL", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if URL:
        return
    skip = pytest.mark.skip(
        reason="needs the compose stack: run scripts/test-compose.sh (make test-compose)"
    )
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname
    assert host in {"127.0.0.1", "localhost", "::1"}, f"{url}: this suite talks to loopback only"
    return url.rstrip("/")


@pytest.fixture(scope="session")
def base_url() -> str:
    return _loopback(URL)


@pytest.fixture(scope="session")
def project() -> str:
    name = os.environ.get("FINQ_COMPOSE_PROJECT", "")
    assert name, "FINQ_COMPOSE_PROJECT is not set"
    return name


@pytest.fixture(scope="session")
def flower_auth() -> tuple[str, str]:
    user, _, password = os.environ.get("FINQ_COMPOSE_FLOWER_AUTH", "").partition(":")
    assert user and password, "FINQ_COMPOSE_FLOWER_AUTH (user:password) is not set"
    return user, password


@pytest.fixture(scope="session")
def api_replicas() -> int:
    return int(os.environ.get("FINQ_COMPOSE_API_REPLICAS", "3"))


@pytest.fixture(scope="session")
def worker_replicas() -> int:
    return int(os.environ.get("FINQ_COMPOSE_WORKER_REPLICAS", "3"))


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=15.0) as c:
        yield c


@pytest.fixture(scope="session")
def auth_headers(client: httpx.Client) -> dict[str, str]:
    """A bearer token of the admin account when the API has /api/v1/auth/token, else none."""
    username = os.environ.get("FINQ_COMPOSE_ADMIN_USERNAME", "")
    password = os.environ.get("FINQ_COMPOSE_ADMIN_PASSWORD", "")
    resp = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    if resp.status_code in (404, 405):
        return {}  # this API version has no authentication
    assert resp.status_code == 200, f"token: {resp.status_code} {resp.text[:300]}"
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
