"""Accounts through nginx on the shared stack, with the real beat and workers: a token names the
user's immutable id and token version, so deleting an account, changing its password or role
voids the tokens issued before; deleting an account stops its schedules, cancels its queued and
running tasks and deletes its uploads; names are unique ignoring case and a deleted name is never
reused, by the API and by `make user` (scripts/create_user.py) alike."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, LocalStack
from tests.e2e.client import login, submit, wait_final, wait_running
from tests.e2e.tasks import ENDLESS_MC, QUICK_LOAN
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
RUNS_OF = sa.text("SELECT count(*) FROM tasks WHERE schedule_id = :s").bindparams(
    sa.bindparam("s", type_=sa.Uuid())
)
CSV = b"date,A,B\n" + b"".join(
    f"2024-01-{d:02d},{100 + d},{50 + d / 2}\n".encode() for d in range(1, 29)
)


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *stack.admin)


@pytest.fixture(scope="module")
def database(stack: LocalStack) -> Iterator[sa.Engine]:
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    yield engine
    engine.dispose()


def create(admin: httpx.Client, name: str, role: str = "user") -> httpx.Response:
    return admin.post("/api/v1/users", json={"username": name, "password": PASSWORD, "role": role})


def fresh(admin: httpx.Client, prefix: str = "u") -> str:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    assert create(admin, name).status_code == 201
    return name


def as_token(stack: LocalStack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def token_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def refused(client: httpx.Client) -> bool:
    resp = client.get("/api/v1/tasks")
    return resp.status_code == 401 and resp.json()["detail"] == "Could not validate credentials"


def test_a_deleted_accounts_token_stays_void_and_its_name_is_not_reused(
    stack: LocalStack, admin: httpx.Client
) -> None:
    name = fresh(admin)
    old = login(stack.url, name, PASSWORD)
    assert old.get("/api/v1/auth/me").status_code == 200
    assert admin.delete(f"/api/v1/users/{name}").status_code == 204
    assert refused(old)
    # Re-creating the name, even as an admin and in another case, is refused naming the
    # field: the old token can never speak for a new account.
    for again, role in ((name, "admin"), (name.upper(), "user")):
        clash = create(admin, again, role)
        assert clash.status_code == 409, clash.text
        (problem,) = clash.json()["detail"]
        assert problem["loc"] == ["body", "username"]
        assert "deleted account" in problem["msg"]
    assert refused(old)
    assert name not in {u["username"] for u in admin.get("/api/v1/users").json()}
    assert admin.delete(f"/api/v1/users/{name}").status_code == 404
    gone = httpx.post(
        stack.url + "/api/v1/auth/token", data={"username": name, "password": PASSWORD}
    )
    assert gone.status_code == 401


def test_a_password_change_voids_every_token_and_ticket_issued_before(
    stack: LocalStack, admin: httpx.Client
) -> None:
    name = fresh(admin)
    first, second = login(stack.url, name, PASSWORD), login(stack.url, name, PASSWORD)
    task = submit(first, "loan_amortization", QUICK_LOAN)["id"]
    ticket = first.post(f"/api/v1/tasks/{task}/events/ticket").json()["ticket"]
    wrong = second.post(
        "/api/v1/auth/password",
        json={"current_password": "not my password", "new_password": "a new long password"},
    )
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == [
        "body",
        "current_password",
    ]
    assert not refused(first)
    changed = second.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a new long password"},
    )
    assert changed.status_code == 204, changed.text
    assert refused(first) and refused(second)
    # A stream ticket issued before is void too.
    stream = httpx.get(f"{stack.url}/api/v1/tasks/{task}/events", params={"ticket": ticket})
    assert stream.status_code == 401
    third = login(stack.url, name, "a new long password")
    # An admin's reset voids them too.
    reset = admin.patch(f"/api/v1/users/{name}", json={"password": PASSWORD})
    assert reset.status_code == 200, reset.text
    assert refused(third)
    assert not refused(login(stack.url, name, PASSWORD))


def test_a_role_change_voids_every_token_issued_before(
    stack: LocalStack, admin: httpx.Client
) -> None:
    name = fresh(admin)
    user = login(stack.url, name, PASSWORD)
    assert user.get("/api/v1/auth/me").json()["priorities"] == ["normal", "low"]
    promoted = admin.patch(f"/api/v1/users/{name}", json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert refused(user)
    boss = login(stack.url, name, PASSWORD)
    assert boss.get("/api/v1/auth/me").json()["priorities"] == ["high", "normal", "low"]
    assert admin.patch(f"/api/v1/users/{name}", json={"role": "user"}).status_code == 200
    assert refused(boss)  # the admin token must not outlive the demotion
    same = admin.patch(f"/api/v1/users/{name}", json={"role": "user"})  # no change: no bump
    assert same.status_code == 200
    assert not refused(login(stack.url, name, PASSWORD))
    empty = admin.patch(f"/api/v1/users/{name}", json={})
    assert empty.status_code == 422


def test_usernames_are_unique_ignoring_case(stack: LocalStack, admin: httpx.Client) -> None:
    name = f"Alice{uuid.uuid4().hex[:8]}"
    assert create(admin, name).status_code == 201
    clash = create(admin, name.lower())
    assert clash.status_code == 409, clash.text
    (problem,) = clash.json()["detail"]
    assert problem["loc"] == ["body", "username"] and "ignoring case" in problem["msg"]
    # One account, found by any case; it keeps the name as created.
    me = login(stack.url, name.lower(), PASSWORD).get("/api/v1/auth/me").json()
    assert me["username"] == name


def test_deleting_an_account_stops_its_schedules_tasks_and_uploads(
    stack: LocalStack, admin: httpx.Client, database: sa.Engine
) -> None:
    name = fresh(admin)
    user = login(stack.url, name, PASSWORD)
    running = submit(user, "monte_carlo_option", ENDLESS_MC)["id"]
    wait_running(user, running)
    delayed = submit(user, "loan_amortization", QUICK_LOAN, delay_seconds=600)["id"]
    done = submit(user, "loan_amortization", QUICK_LOAN)["id"]
    assert wait_final(user, done)["status"] == "SUCCESS"
    upload = user.post("/api/v1/uploads", files={"file": ("p.csv", CSV, "text/csv")})
    assert upload.status_code == 201, upload.text
    body = {"name": "s", "cron": "* * * * * */2", "type": "loan_amortization"}
    schedule = user.post("/api/v1/schedules", json={**body, "params": QUICK_LOAN}).json()

    def owned() -> int:
        with database.connect() as db:
            return int(
                db.execute(
                    sa.text("SELECT count(*) FROM tasks WHERE owner = :o"), {"o": name}
                ).scalar_one()
            )

    wait_until(lambda: owned() > 3, 30, 0.2, what="the schedule's first run")
    assert admin.delete(f"/api/v1/users/{name}").status_code == 204
    assert refused(user)
    assert admin.get(f"/api/v1/tasks/{delayed}").json()["status"] == "CANCELLED"
    assert wait_final(admin, running)["status"] == "CANCELLED"  # stopped within a chunk
    assert admin.get(f"/api/v1/tasks/{done}").json()["status"] == "SUCCESS"  # kept to expiry
    assert admin.get(f"/api/v1/schedules/{schedule['id']}").status_code == 404
    with database.connect() as db:
        uploads = db.execute(sa.text("SELECT count(*) FROM uploads WHERE owner = :o"), {"o": name})
        assert uploads.scalar_one() == 0
    # The beat keeps firing: an admin's schedule of the same cron runs twice, and the deleted
    # account's count has not moved meanwhile.
    after = owned()
    mine = admin.post("/api/v1/schedules", json={**body, "params": QUICK_LOAN}).json()

    def admin_runs() -> int:
        with database.connect() as db:
            return int(db.execute(RUNS_OF, {"s": uuid.UUID(mine["id"])}).scalar_one())

    try:
        wait_until(lambda: admin_runs() >= 2, 30, 0.2, what="two runs of the admin's schedule")
    finally:
        admin.delete(f"/api/v1/schedules/{mine['id']}")
    assert owned() == after


def run_make_user(stack: LocalStack, *args: str, password: str = PASSWORD) -> Any:
    env = {**os.environ, "DATABASE_URL": stack.info["DATABASE_URL"]}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "create_user.py"), *args],
        input=password + "\n",
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_make_user_follows_the_same_rules(stack: LocalStack, admin: httpx.Client) -> None:
    name = f"Bob{uuid.uuid4().hex[:8]}"
    made = run_make_user(stack, name)
    assert made.returncode == 0, made.stderr
    clash = run_make_user(stack, name.lower())
    assert clash.returncode == 1 and "exists" in clash.stderr
    bob = login(stack.url, name, PASSWORD)
    reset = run_make_user(stack, name, "--reset", password="another long password")
    assert reset.returncode == 0, reset.stderr
    assert refused(bob)  # a reset voids the tokens issued before
    login(stack.url, name, "another long password")
    assert admin.delete(f"/api/v1/users/{name}").status_code == 204
    for again in (name, name.upper()):
        reused = run_make_user(stack, again)
        assert reused.returncode == 1 and "deleted account" in reused.stderr, reused.stderr
