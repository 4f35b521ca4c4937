"""Accounts, tokens, isolation, rate limits and hardening, through nginx on a real stack
whose limits are low enough to reach."""

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import ROOT, STACK_ENV_DROP, VENV_BIN, LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

LOGIN_LIMIT = 5
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("secure") / "run",
        "--api-replicas",
        "2",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "1",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
            "RATE_LIMIT_SUBMIT": "8/minute",
            "RATE_LIMIT_GLOBAL": "100000/minute",
            "MAX_BODY_BYTES": "65536",
            "TASK_BODY_MAX_BYTES": "65536",
            "CORS_ORIGINS": "https://allowed.example",
            "ACCESS_TOKEN_EXPIRE_MINUTES": "5",
        },
    )
    yield s
    stop_stack(s)


def token_client(secure: LocalStack, user_id: int) -> httpx.Client:
    """A client with a token signed by the stack's key (logins here are rate limited to a
    handful a minute; the login route itself is tested on its own)."""
    return httpx.Client(
        base_url=secure.url,
        timeout=30,
        headers={"Authorization": f"Bearer {forge(secure, sub=str(user_id))}"},
    )


@pytest.fixture(scope="module")
def admin(secure: LocalStack) -> httpx.Client:
    client = login(secure.url, *secure.admin)  # the one login: the admin's id
    client.secure = secure  # type: ignore[attr-defined]
    return client


def make_user(admin: httpx.Client, role: str = "user") -> tuple[str, httpx.Client]:
    name = f"u{uuid.uuid4().hex[:10]}"
    resp = admin.post("/api/v1/users", json={"username": name, "password": PASSWORD, "role": role})
    assert resp.status_code == 201, resp.text
    return name, token_client(admin.secure, resp.json()["id"])  # type: ignore[attr-defined]


def forge(secure: LocalStack, **overrides: object) -> str:
    """A token for the first account (the admin, id 1) unless `sub` says otherwise."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "1",
        "ver": 0,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secure.info["APP_SECRET_KEY"], algorithm="HS256")


def test_bad_tokens_all_get_the_same_401(secure: LocalStack) -> None:
    good = forge(secure)
    header, payload, signature = good.split(".")
    alg_none = jwt.encode(
        {"sub": secure.admin[0], "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "x"},
        key=None,
        algorithm="none",
    )
    wrong_key = jwt.encode(
        {"sub": secure.admin[0], "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "x"},
        "another-secret-" * 4,
        algorithm="HS256",
    )
    cases = {
        "none": None,
        "garbage": "not-a-token",
        "tampered": f"{header}.{payload[:-2]}AA.{signature}",
        "alg none": alg_none,
        "wrong key": wrong_key,
        "expired": forge(secure, exp=datetime.now(UTC) - timedelta(seconds=5)),
        "no jti": forge(secure, jti=None),
        "unknown user": forge(secure, sub="999999"),
        "a name as sub": forge(secure, sub=secure.admin[0]),
        "no version": forge(secure, ver=None),
        "another version": forge(secure, ver=1),
    }
    bodies = set()
    for name, token in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = httpx.get(secure.url + "/api/v1/tasks", headers=headers)
        assert resp.status_code == 401, name
        assert resp.headers["WWW-Authenticate"] == "Bearer", name
        bodies.add(resp.json()["detail"])
    assert bodies == {"Could not validate credentials"}
    assert (
        httpx.get(
            secure.url + "/api/v1/tasks", headers={"Authorization": f"Bearer {good}"}
        ).status_code
        == 200
    )


def test_token_shape_and_me(secure: LocalStack, admin: httpx.Client) -> None:
    name, _ = make_user(admin)
    resp = httpx.post(
        secure.url + "/api/v1/auth/token", data={"username": name, "password": PASSWORD}
    )
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    claims = jwt.decode(body["access_token"], secure.info["APP_SECRET_KEY"], algorithms=["HS256"])
    me = httpx.get(
        secure.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    ).json()
    assert me["username"] == name and me["role"] == "user"
    assert claims["sub"] == str(me["id"]) and claims["ver"] == 0
    assert {"exp", "iat", "jti"} <= set(claims)
    assert me["priorities"] == ["normal", "low"]  # no `high` for a plain user


def test_owners_are_isolated(admin: httpx.Client) -> None:
    _, alice = make_user(admin)
    _, bob = make_user(admin)
    task = submit(alice, "loan_amortization", QUICK_LOAN)
    wait_final(alice, task["id"])
    for method, path in [
        ("GET", ""),
        ("GET", "/history"),
        ("POST", "/cancel"),
        ("POST", "/retry"),
        ("DELETE", ""),
        ("GET", "/events"),
        ("POST", "/events/ticket"),
    ]:
        resp = bob.request(method, f"/api/v1/tasks/{task['id']}{path}")
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert resp.json()["detail"] == "Task not found"
    assert bob.get("/api/v1/tasks").json()["items"] == []
    assert bob.get("/api/v1/tasks", params={"all": "true"}).status_code == 403
    every = admin.get("/api/v1/tasks", params={"all": "true", "limit": 200}).json()["items"]
    assert task["id"] in {t["id"] for t in every}
    assert admin.get(f"/api/v1/tasks/{task['id']}").status_code == 200


def test_user_management_is_for_admins(admin: httpx.Client) -> None:
    name, alice = make_user(admin)
    assert alice.get("/api/v1/users").status_code == 403
    assert (
        alice.post("/api/v1/users", json={"username": "mallory", "password": PASSWORD}).status_code
        == 403
    )
    assert name in {u["username"] for u in admin.get("/api/v1/users").json()}
    short = admin.post("/api/v1/users", json={"username": "shorty", "password": "short"})
    assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "password"]
    odd = admin.post("/api/v1/users", json={"username": "a b;drop", "password": PASSWORD})
    assert odd.status_code == 422 and odd.json()["detail"][0]["loc"] == ["body", "username"]
    assert (
        admin.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code
        == 409
    )
    assert admin.delete(f"/api/v1/users/{name}").status_code == 204
    assert alice.get("/api/v1/tasks").status_code == 401  # a deleted user's token is void
    assert admin.delete(f"/api/v1/users/{name}").status_code == 404


def test_login_limit_is_shared_by_replicas_and_ignores_forged_addresses(
    secure: LocalStack,
) -> None:
    import redis

    r = redis.Redis(port=int(secure.info["REDIS_PORT"]))
    for key in r.scan_iter("*login*"):  # start from a clean window
        r.delete(key)
    replicas, remaining = set(), []
    with httpx.Client(base_url=secure.url) as c:
        for i in range(LOGIN_LIMIT):
            resp = c.post(
                "/api/v1/auth/token",
                data={"username": "ghost", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"10.0.0.{i}"},
            )  # forged: ignored
            assert resp.status_code == 401
            replicas.add(resp.headers["X-Served-By"])
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
            assert resp.headers["X-RateLimit-Limit"] == str(LOGIN_LIMIT)
        blocked = c.post(
            "/api/v1/auth/token",
            data={"username": "ghost", "password": "x"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
    assert replicas == {"api-1", "api-2"}, "requests should alternate between replicas"
    assert remaining == list(range(LOGIN_LIMIT - 1, -1, -1)), "counted once, across replicas"
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.headers["X-RateLimit-Remaining"] == "0"
    assert int(blocked.headers["X-RateLimit-Reset"]) > time.time()
    assert blocked.json()["request_id"]


def test_submission_limit_per_user(admin: httpx.Client) -> None:
    _, carol = make_user(admin)
    codes = [
        carol.post(
            "/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN}
        ).status_code
        for _ in range(9)
    ]
    assert codes == [202] * 8 + [429]
    _, dave = make_user(admin)  # another user has a budget of their own
    assert (
        dave.post(
            "/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN}
        ).status_code
        == 202
    )


def test_bodies_are_bounded_in_nginx_and_in_the_app(
    secure: LocalStack, admin: httpx.Client
) -> None:
    big = b'{"type": "loan_amortization", "params": {"x": "' + b"a" * 70_000 + b'"}}'
    resp = admin.post("/api/v1/tasks", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["request_id"]
    # Straight to a replica (bypassing nginx), streamed without a length: the app stops it.
    port = secure.info["API_PORTS"].split(",")[0]

    def chunks() -> Iterator[bytes]:
        yield big

    direct = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/tasks",
        content=chunks(),
        headers={
            "content-type": "application/json",
            "Authorization": admin.headers["Authorization"],
        },
    )
    assert direct.status_code == 413
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = admin.post(
        "/api/v1/tasks", content=deep[:60_000], headers={"content-type": "application/json"}
    )
    assert resp.status_code in (400, 422)


def test_security_headers_and_cors(secure: LocalStack) -> None:
    resp = httpx.get(secure.url + "/health")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    preflight = {"Access-Control-Request-Method": "POST"}
    ok = httpx.options(
        secure.url + "/api/v1/tasks", headers={**preflight, "Origin": "https://allowed.example"}
    )
    assert ok.headers.get("access-control-allow-origin") == "https://allowed.example"
    other = httpx.options(
        secure.url + "/api/v1/tasks", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_flower_needs_its_password_and_hides_metrics(secure: LocalStack) -> None:
    assert httpx.get(secure.url + "/flower/").status_code == 401
    assert httpx.get(secure.url + "/flower/", auth=secure.flower_auth).status_code == 200
    assert httpx.get(secure.url + "/flower/metrics", auth=secure.flower_auth).status_code == 404


def test_flower_shows_the_workers_without_task_events(secure: LocalStack) -> None:
    """Task events are off by default (TASK_EVENTS): Flower still lists every worker."""

    def workers() -> dict[str, object] | None:
        resp = httpx.get(
            secure.url + "/flower/api/workers",
            params={"refresh": "1"},
            auth=secure.flower_auth,
            timeout=20,
        )
        assert resp.status_code == 200, resp.text
        found = {name: info for name, info in resp.json().items() if name.startswith("worker")}
        return found or None

    found = wait_until(workers, 60, 1.0, what="Flower to list the workers")
    assert all(isinstance(info, dict) and info.get("stats") for info in found.values())


def test_production_refuses_to_start_without_a_real_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV_DROP}
    env.update(
        PATH=f"{VENV_BIN}:{env['PATH']}",
        APP_ENV="production",
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    for secret in (None, "too-short", "change-me-to-a-long-random-string"):
        if secret is None:
            env.pop("APP_SECRET_KEY", None)
        else:
            env["APP_SECRET_KEY"] = secret
        out = subprocess.run(
            [str(ROOT / "deploy" / "finq-service"), "api"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert "APP_SECRET_KEY" in out.stderr and "Traceback" not in out.stderr
