"""Uploads, the csv_portfolio_analytics type and charts, through nginx on the shared stack:
validation answers 422 naming the problem, uploads are private (at submission and again in
the worker), successful results get a PNG chart that only their owner can fetch."""

import json
import struct
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until


def wait_chart(client: httpx.Client, task_id: str) -> httpx.Response:
    """A chart is drawn when first asked for: 202 (with Retry-After) until a worker stored it."""

    def probe() -> httpx.Response | None:
        resp = client.get(f"/api/v1/tasks/{task_id}/chart.png")
        assert resp.status_code in (200, 202), resp.text
        if resp.status_code == 202:
            assert resp.headers["retry-after"] == "1"
        return resp if resp.status_code == 200 else None

    return wait_until(probe, 30, 0.1, what=f"the chart of {task_id}")


pytestmark = pytest.mark.e2e


def price_csv(rows: int = 260, assets: int = 3, seed: int = 1) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(rng.normal(0.0004, 0.012, (rows, assets)), axis=0))
    dates = np.datetime64("2023-01-02") + np.arange(rows)
    lines = ["date," + ",".join(f"ASSET{j}" for j in range(assets))]
    lines += [
        f"{d},{','.join(f'{p:.6f}' for p in row)}" for d, row in zip(dates, prices, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode(), np.round(prices, 6)


def upload(client: httpx.Client, data: bytes, name: str = "prices.csv") -> httpx.Response:
    return client.post("/api/v1/uploads", files={"file": (name, data, "text/csv")})


@pytest.fixture(scope="module")
def alice(stack: LocalStack) -> httpx.Client:
    admin = login(stack.url, *stack.admin)
    return login(stack.url, *new_user(admin))


@pytest.fixture(scope="module")
def bob(stack: LocalStack) -> httpx.Client:
    admin = login(stack.url, *stack.admin)
    return login(stack.url, *new_user(admin))


@pytest.fixture(scope="module")
def alice_upload(alice: httpx.Client) -> dict[str, Any]:
    data, _ = price_csv()
    resp = upload(alice, data, "../../etc/my prices.csv")
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    assert resp.headers["Location"] == f"/api/v1/uploads/{body['id']}"
    return body


def test_an_upload_reports_its_shape(alice: httpx.Client, alice_upload: dict[str, Any]) -> None:
    assert alice_upload["filename"] == "my prices.csv"  # no folders kept
    assert alice_upload["assets"] == ["ASSET0", "ASSET1", "ASSET2"]
    assert alice_upload["rows"] == 260
    assert (alice_upload["first_date"], alice_upload["last_date"]) == ("2023-01-02", "2023-09-18")
    listed = alice.get("/api/v1/uploads").json()
    assert alice_upload["id"] in [u["id"] for u in listed]
    assert alice.get(f"/api/v1/uploads/{alice_upload['id']}").json() == alice_upload


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"date\n2024-01-01\n", "bad header"),
        (
            b"date,A\n2024-01-01,1\n2024-01-02,oops\n2024-01-03,2\n",
            "line 3, column 'A': 'oops' is not a number",
        ),
        (b"date,A\n2024-01-01,1\n2024-01-02,2\n", "too few rows"),
        (b"date,A\n2024-01-02,1\n2024-01-01,2\n2024-01-03,2\n", "out of order"),
        (b"date,A\n2024-01-01,1\n2024-01-01,2\n2024-01-03,2\n", "duplicate date"),
        (b"date,A\n2024-01-01,1\n2024-01-02,-2\n2024-01-03,2\n", "not positive"),
    ],
)
def test_bad_files_answer_422_naming_the_problem(
    alice: httpx.Client, data: bytes, needle: str
) -> None:
    resp = upload(alice, data)
    assert resp.status_code == 422, resp.text
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "file"] and needle in err["msg"], err


def test_missing_file_and_size_limit(alice: httpx.Client) -> None:
    missing = alice.post("/api/v1/uploads", data={"nothing": "here"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "file"]
    big = b"date,A\n" + b"2024-01-01,1\n" * (5 * 1024 * 1024 // 13 + 1)
    too_big = upload(alice, big)
    assert too_big.status_code == 413 and "UPLOAD_MAX_BYTES" in too_big.json()["detail"]


def test_uploads_are_private(
    alice: httpx.Client, bob: httpx.Client, alice_upload: dict[str, Any]
) -> None:
    uid = alice_upload["id"]
    assert uid not in [u["id"] for u in bob.get("/api/v1/uploads").json()]
    assert bob.get(f"/api/v1/uploads/{uid}").status_code == 404
    assert bob.delete(f"/api/v1/uploads/{uid}").status_code == 404
    resp = bob.post(
        "/api/v1/tasks", json={"type": "csv_portfolio_analytics", "params": {"upload_id": uid}}
    )
    assert resp.status_code == 422
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "params", "upload_id"] and "not found" in err["msg"]


def test_csv_analytics_end_to_end_with_chart(
    alice: httpx.Client, bob: httpx.Client, alice_upload: dict[str, Any]
) -> None:
    _, prices = price_csv()
    task = submit(
        alice,
        "csv_portfolio_analytics",
        {
            "upload_id": alice_upload["id"],
            "weights": [0.5, 0.3, 0.2],
            "confidence": 0.9,
            "risk_free_rate": 0.01,
        },
    )
    done = wait_final(alice, task["id"])
    assert done["status"] == "SUCCESS", done["error"]
    result = done["result"]
    returns = prices[1:] / prices[:-1] - 1
    assert [row["asset"] for row in result["per_asset"]] == alice_upload["assets"]
    for j, row in enumerate(result["per_asset"]):
        assert row["annual_return"] == pytest.approx(returns[:, j].mean() * 252, rel=1e-6)
    port = returns @ np.array([0.5, 0.3, 0.2])
    assert result["var"] == pytest.approx(np.quantile(-port, 0.9), rel=1e-6)
    assert len(result["correlation"]) == 3
    history = [e["status"] for e in alice.get(f"/api/v1/tasks/{task['id']}/history").json()]
    assert history == ["PENDING", "RUNNING", "SUCCESS"]

    chart = wait_chart(alice, task["id"])
    assert chart.headers["content-type"] == "image/png"
    assert chart.headers["cache-control"].startswith("private")
    assert chart.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", chart.content[16:24]) == (900, 500)
    assert bob.get(f"/api/v1/tasks/{task['id']}/chart.png").status_code == 404
    assert alice.get(f"/api/v1/tasks/{uuid.uuid4()}/chart.png").status_code == 404


def test_weights_must_match_the_upload(alice: httpx.Client, alice_upload: dict[str, Any]) -> None:
    for weights, needle in (
        ([1.0, 0.0], "has 2 entries but the upload has 3 assets"),
        ([0, 0, 0], "must not all be zero"),
    ):
        resp = alice.post(
            "/api/v1/tasks",
            json={
                "type": "csv_portfolio_analytics",
                "params": {"upload_id": alice_upload["id"], "weights": weights},
            },
        )
        assert resp.status_code == 422
        (err,) = resp.json()["detail"]
        assert err["loc"] == ["body", "params", "weights"] and needle in err["msg"]


def test_the_worker_checks_the_owner_and_existence_again(
    stack: LocalStack,
    alice: httpx.Client,
    bob: httpx.Client,
    alice_upload: dict[str, Any],
) -> None:
    """Submission checks are not enough: the worker loads an upload by id *and* the task's
    owner. A waiting task of Bob's is made to point at Alice's upload behind the API's back;
    another task's upload is deleted before it runs. Both fail, neither sees the data.
    (They wait an hour; cancel + retry then queues them at once, when we are ready.)"""
    data, _ = price_csv(seed=2)
    own = upload(bob, data).json()
    stolen = submit(bob, "csv_portfolio_analytics", {"upload_id": own["id"]}, delay_seconds=3600)
    deleted = submit(bob, "csv_portfolio_analytics", {"upload_id": own["id"]}, delay_seconds=3600)
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET params = :p WHERE id = :id"),
            {
                "p": json.dumps({**stolen["params"], "upload_id": alice_upload["id"]}),
                "id": stolen["id"].replace("-", ""),
            },
        )
    engine.dispose()
    assert bob.delete(f"/api/v1/uploads/{own['id']}").status_code == 204
    for task in (stolen, deleted):
        assert bob.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 200
        assert bob.post(f"/api/v1/tasks/{task['id']}/retry").status_code == 202
    for task, upload_id in ((stolen, alice_upload["id"]), (deleted, own["id"])):
        done = wait_final(bob, task["id"])
        assert done["status"] == "FAILED" and done["result"] is None
        assert done["error"]["type"] == "UploadNotFound"
        assert f"upload_id: upload {upload_id} not found" in done["error"]["message"]
    assert alice.get(f"/api/v1/uploads/{alice_upload['id']}").status_code == 200


def test_every_type_gets_a_chart_and_deleting_the_task_removes_it(alice: httpx.Client) -> None:
    examples = {t["name"]: t["example"] for t in alice.get("/api/v1/task-types").json()}
    ids = {
        name: submit(alice, name, params)["id"]
        for name, params in examples.items()
        if name != "csv_portfolio_analytics"
    }
    for name, task_id in ids.items():
        assert wait_final(alice, task_id)["status"] == "SUCCESS", name
        # Nothing is drawn until someone asks: the first request queues the drawing.
        first = alice.get(f"/api/v1/tasks/{task_id}/chart.png")
        assert first.status_code == 202, (name, first.status_code)
        chart = wait_chart(alice, task_id)
        assert chart.content.startswith(b"\x89PNG"), name
    mc = alice.get(f"/api/v1/tasks/{ids['monte_carlo_option']}").json()["result"]
    assert sum(mc["payoff_histogram"]["counts"]) == mc["payoff_histogram"]["sampled"]
    assert mc["convergence"]["paths"][-1] == examples["monte_carlo_option"]["paths"]
    pending = submit(alice, "loan_amortization", QUICK_LOAN, delay_seconds=3600)
    assert alice.get(f"/api/v1/tasks/{pending['id']}/chart.png").status_code == 404
    alice.post(f"/api/v1/tasks/{pending['id']}/cancel")
    loan = ids["loan_amortization"]
    assert alice.delete(f"/api/v1/tasks/{loan}").status_code == 204
    assert alice.get(f"/api/v1/tasks/{loan}/chart.png").status_code == 404


def test_a_deleted_upload_is_gone(alice: httpx.Client) -> None:
    data, _ = price_csv(rows=10, assets=1, seed=3)
    created = upload(alice, data, "short.csv").json()
    assert alice.delete(f"/api/v1/uploads/{created['id']}").status_code == 204
    assert alice.get(f"/api/v1/uploads/{created['id']}").status_code == 404
    assert created["id"] not in [u["id"] for u in alice.get("/api/v1/uploads").json()]
