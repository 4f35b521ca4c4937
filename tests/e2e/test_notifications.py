"""Notifications on a final status, against a real HTTP receiver and a real SMTP server:
signed webhooks, retries with backoff that never re-run the calculation, e-mail, every attempt
visible on the task; and the SSRF rules, at submission and again at send time."""

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import Receiver
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until
from tests.mailserver import SMTP_USER, Mailbox

pytestmark = pytest.mark.e2e

SETTLED = {"delivered", "failed", "refused", "skipped"}


@pytest.fixture(scope="module")
def admin(notify_stack: LocalStack) -> httpx.Client:
    return login(notify_stack.url, *notify_stack.admin)


def settled(
    client: httpx.Client, task_id: str, channels: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The task's deliveries once every channel has a final outcome."""

    def probe() -> list[dict[str, Any]] | None:
        body = client.get(f"/api/v1/tasks/{task_id}").json()
        done = [d for d in body["deliveries"] if d["status"] in SETTLED]
        return body["deliveries"] if len(done) >= channels else None

    return wait_until(probe, timeout, 0.1, what=f"notifications of {task_id}")


def verify(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_signed_webhook_retried_after_a_500_and_an_email(
    notify_stack: LocalStack,
    admin: httpx.Client,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    path = receiver.new_path(500)  # the first attempt fails, the second is answered 200
    task = submit(
        admin,
        "loan_amortization",
        QUICK_LOAN,
        notify={"webhook_url": receiver.base_url + path, "email": "ops@example.com"},
    )
    assert task["notify"] == {"webhook_url": receiver.base_url + path, "email": "ops@example.com"}
    deliveries = settled(admin, task["id"], channels=2)
    hooks = [d for d in deliveries if d["channel"] == "webhook"]
    assert [(d["attempt"], d["status"], d["http_status"]) for d in hooks] == [
        (1, "retrying", 500),
        (2, "delivered", 200),
    ]
    assert "next attempt in" in hooks[0]["error"]
    mails = [d for d in deliveries if d["channel"] == "email"]
    assert [(d["attempt"], d["status"], d["target"]) for d in mails] == [
        (1, "delivered", "ops@example.com")
    ]
    assert {d["task_status"] for d in deliveries} == {"SUCCESS"}

    first, second = receiver.at(path)
    assert first.body == second.body
    assert first.headers["X-Finq-Delivery"] == second.headers["X-Finq-Delivery"]
    assert first.headers["X-Finq-Event"] == "task.success"
    assert first.headers["Content-Type"] == "application/json"
    assert verify(
        notify_stack.info["WEBHOOK_SECRET"], second.body, second.headers["X-Finq-Signature"]
    )
    assert not verify("another-secret", second.body, second.headers["X-Finq-Signature"])
    sent = second.json()
    assert sent["id"] == task["id"] and sent["status"] == "SUCCESS"
    assert sent["result"]["payment"] == pytest.approx(85.61, abs=0.01)

    # The retry re-sent the notification, never the calculation.
    record = admin.get(f"/api/v1/tasks/{task['id']}").json()
    assert record["attempts"] == 1
    history = [e["status"] for e in admin.get(f"/api/v1/tasks/{task['id']}/history").json()]
    assert history == ["PENDING", "RUNNING", "SUCCESS"]

    (message,) = mailbox.to("ops@example.com")
    assert task["id"] in message["Subject"] and "SUCCESS" in message["Subject"]
    assert message["From"] == "finq@test.example"
    text = message.get_content()
    assert json.loads(text[text.index("{") :])["id"] == task["id"]
    assert any(m.login == SMTP_USER for m in mailbox.messages)


def test_cancel_and_failure_notify_and_permanent_errors_are_not_retried(
    admin: httpx.Client,
    receiver: Receiver,
) -> None:
    cancelled_path = receiver.new_path()
    gone_path = receiver.new_path(404)
    down_path = receiver.new_path(503, 503, 503, 503)
    cancelled = submit(
        admin,
        "loan_amortization",
        QUICK_LOAN,
        delay_seconds=3600,
        notify={"webhook_url": receiver.base_url + cancelled_path},
    )
    assert admin.post(f"/api/v1/tasks/{cancelled['id']}/cancel").status_code == 200
    gone = submit(
        admin,
        "loan_amortization",
        QUICK_LOAN,
        notify={"webhook_url": receiver.base_url + gone_path},
    )
    # Valid, but overflows at run time: a FAILED outcome.
    failing = submit(
        admin,
        "cash_flow_analysis",
        {"cash_flows": [-1] + [1] * 400, "discount_rate": -0.99},
        notify={"webhook_url": receiver.base_url + down_path},
    )

    (c,) = settled(admin, cancelled["id"], 1)
    assert (c["task_status"], c["status"], c["attempt"]) == ("CANCELLED", "delivered", 1)
    assert receiver.at(cancelled_path)[0].json()["status"] == "CANCELLED"

    (g,) = settled(admin, gone["id"], 1)
    assert (g["status"], g["http_status"], g["attempt"]) == ("failed", 404, 1)

    assert wait_final(admin, failing["id"])["status"] == "FAILED"
    attempts = settled(admin, failing["id"], 1)
    # NOTIFY_MAX_ATTEMPTS=3: two retries with backoff, then failed for good.
    assert [(d["attempt"], d["status"], d["http_status"]) for d in attempts] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "failed", 503),
    ]
    assert all(d["task_status"] == "FAILED" for d in attempts)
    assert len(receiver.at(down_path)) == 3


def test_a_schedules_runs_notify_its_targets(admin: httpx.Client, receiver: Receiver) -> None:
    """A schedule's notify is stored with it and copied into every task it creates."""
    path = receiver.new_path()
    notify = {"webhook_url": receiver.base_url + path}
    resp = admin.post(
        "/api/v1/schedules",
        json={
            "name": "notified",
            "cron": "* * * * * */2",
            "type": "loan_amortization",
            "params": QUICK_LOAN,
            "notify": notify,
        },
    )
    assert resp.status_code == 201, resp.text
    schedule = resp.json()
    try:
        assert schedule["notify"] == notify
        listed = {s["id"]: s for s in admin.get("/api/v1/schedules").json()}
        assert listed[schedule["id"]]["notify"] == notify
        hook = wait_until(lambda: receiver.at(path), 30, 0.2, what="a scheduled run's webhook")
    finally:
        assert admin.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
    sent = hook[0].json()
    assert sent["status"] == "SUCCESS" and sent["notify"] == notify
    assert sent["idempotency_key"].startswith(f"schedule:{schedule['id']}:")
    (d,) = [d for d in settled(admin, sent["id"], 1) if d["status"] in SETTLED]
    assert (d["channel"], d["status"]) == ("webhook", "delivered")


def test_bad_targets_answer_422_naming_the_field(admin: httpx.Client) -> None:
    cases = [
        ({"webhook_url": "ftp://127.0.0.1/x"}, "webhook_url", "scheme"),
        ({"webhook_url": "http://user:pw@127.0.0.1/x"}, "webhook_url", "password"),
        ({"webhook_url": "http://no-such-host.invalid/x"}, "webhook_url", "does not resolve"),
        ({"email": "not-an-address"}, "email", "not a valid e-mail"),
        ({"email": "a@example.com\r\nBcc: b@example.com"}, "email", "not a valid e-mail"),
    ]
    for notify, field, needle in cases:
        resp = admin.post(
            "/api/v1/tasks",
            json={"type": "loan_amortization", "params": QUICK_LOAN, "notify": notify},
        )
        assert resp.status_code == 422, resp.text
        (err,) = resp.json()["detail"]
        assert err["loc"] == ["body", "notify", field] and needle in err["msg"], err
    empty = admin.post(
        "/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN, "notify": {}}
    )
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "notify"]


# ---- the shared stack: production defaults (no private targets, no SMTP) ---------------------


@pytest.fixture(scope="module")
def shared_admin(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *stack.admin)


def test_loopback_and_private_webhooks_are_refused_at_submission(
    shared_admin: httpx.Client,
    receiver: Receiver,
) -> None:
    # An address typed as such is named ("\0": nothing hidden); a host name's never is.
    for url, needle, hidden in (
        (receiver.base_url + "/hook", "resolves to 127.0.0.1", "\0"),
        ("http://[::1]/x", "::1", "\0"),
        ("http://10.0.0.8/x", "10.0.0.8", "\0"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "\0"),
        ("http://localhost:9/x", "public addresses only", "127.0.0.1"),
    ):
        resp = shared_admin.post(
            "/api/v1/tasks",
            json={
                "type": "loan_amortization",
                "params": QUICK_LOAN,
                "notify": {"webhook_url": url},
            },
        )
        assert resp.status_code == 422, resp.text
        (err,) = resp.json()["detail"]
        assert err["loc"] == ["body", "notify", "webhook_url"]
        assert needle in err["msg"] and hidden not in err["msg"], err["msg"]
    assert receiver.at("/hook") == []
    mail = shared_admin.post(
        "/api/v1/tasks",
        json={
            "type": "loan_amortization",
            "params": QUICK_LOAN,
            "notify": {"email": "a@b.example"},
        },
    )
    assert mail.status_code == 422
    assert mail.json()["detail"][0]["loc"] == ["body", "notify", "email"]
    assert "SMTP_HOST" in mail.json()["detail"][0]["msg"]
    # A schedule's notify goes through the same checks; nothing is stored when refused.
    for notify, field, needle in (
        ({"webhook_url": receiver.base_url + "/hook"}, "webhook_url", "resolves to 127.0.0.1"),
        ({"email": "a@b.example"}, "email", "SMTP_HOST"),
    ):
        resp = shared_admin.post(
            "/api/v1/schedules",
            json={
                "name": "refused",
                "cron": "* * * * *",
                "type": "loan_amortization",
                "params": QUICK_LOAN,
                "notify": notify,
            },
        )
        assert resp.status_code == 422, resp.text
        (err,) = resp.json()["detail"]
        assert err["loc"] == ["body", "notify", field] and needle in err["msg"], err
    assert "refused" not in {s["name"] for s in shared_admin.get("/api/v1/schedules").json()}


def test_the_target_is_checked_again_at_send_time(
    stack: LocalStack,
    shared_admin: httpx.Client,
    receiver: Receiver,
) -> None:
    """A name that resolved to a public address at submission may point at 127.0.0.1 when the
    task ends (DNS rebinding). Simulated by changing the stored target to a loopback URL after
    submission: the worker must refuse it and never connect."""
    path = receiver.new_path()
    task = submit(
        shared_admin,
        "loan_amortization",
        QUICK_LOAN,
        delay_seconds=3600,
        notify={"webhook_url": "http://93.184.215.14/hook"},
    )
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET notify = :n WHERE id = :id"),
            {
                "n": json.dumps({"webhook_url": receiver.base_url + path}),
                "id": task["id"].replace("-", ""),
            },
        )
    engine.dispose()
    assert shared_admin.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 200
    (d,) = settled(shared_admin, task["id"], 1)
    assert d["status"] == "refused" and "resolves to 127.0.0.1" in d["error"]
    assert d["target"] == receiver.base_url + path
    assert receiver.at(path) == []


def test_a_batch_notifies_once_when_it_ends(
    notify_stack: LocalStack, admin: httpx.Client, receiver: Receiver
) -> None:
    path, later = receiver.new_path(), receiver.new_path()
    items = [{**QUICK_LOAN, "principal": 1000 + i} for i in range(500)]
    resp = admin.post(
        "/api/v1/batches",
        json={
            "type": "loan_amortization",
            "items": items,
            "notify": {"webhook_url": receiver.base_url + path},
        },
    )
    assert resp.status_code == 202, resp.text
    batch = resp.json()
    (hook,) = wait_until(lambda: receiver.at(path), 120, 0.1, what="the batch's notification")
    assert hook.headers["X-Finq-Event"] == "batch.success"
    assert verify(notify_stack.info["WEBHOOK_SECRET"], hook.body, hook.headers["X-Finq-Signature"])
    assert hook.json()["counts"] == {"SUCCESS": 500} and hook.json()["id"] == batch["id"]
    # A notification sent after the batch's went through the same queue: still one for it.
    task = submit(
        admin, "loan_amortization", QUICK_LOAN, notify={"webhook_url": receiver.base_url + later}
    )
    settled(admin, task["id"], 1)
    assert len(receiver.at(path)) == 1
