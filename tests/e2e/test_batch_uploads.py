"""Batches from an uploaded CSV (an upload of kind items) through nginx on the shared stack:
the upload runs like the same CSV inline, a wrong row is named by its line under
`upload_id`, the header is checked at upload, an upload of the wrong kind or of another user
is refused naming the field, and `finq batch` uploads a large file and deletes it after."""

import csv
import io
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import login
from tests.e2e.conftest import new_user
from tests.e2e.test_batches import create, finq, finq_login, results, wait_batch
from tests.e2e.test_uploads_charts import price_csv, upload

pytestmark = pytest.mark.e2e


def loans_csv(n: int, pad: int = 0) -> str:
    """n loans, one a row; `pad` spaces after each row's last value (values are stripped)."""
    return "principal,annual_rate\n" + "".join(f"{1000 + i},0.05{' ' * pad}\n" for i in range(n))


def items_upload(client: httpx.Client, text: str, name: str = "loans.csv") -> httpx.Response:
    return client.post(
        "/api/v1/uploads", data={"kind": "items"}, files={"file": (name, text.encode(), "text/csv")}
    )


@pytest.fixture(scope="module")
def alice(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *new_user(login(stack.url, *stack.admin)))


@pytest.fixture(scope="module")
def bob(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *new_user(login(stack.url, *stack.admin)))


def test_an_uploaded_csv_runs_like_the_same_csv_inline(alice: httpx.Client) -> None:
    text = loans_csv(300)
    resp = items_upload(alice, text)
    assert resp.status_code == 201, resp.text
    uploaded = resp.json()
    assert uploaded["kind"] == "items" and uploaded["rows"] == 300
    assert uploaded["columns"] == ["principal", "annual_rate"] and uploaded["assets"] is None
    body = {"type": "loan_amortization", "upload_id": uploaded["id"], "base": {"years": 1}}
    key = {"Idempotency-Key": f"upload-{uploaded['id']}"}
    first = alice.post("/api/v1/batches", json=body, headers=key)
    assert first.status_code == 202, first.text
    by_upload = first.json()
    inline = create(alice, {"type": "loan_amortization", "csv": text, "base": {"years": 1}})
    assert by_upload["total"] == 300 and by_upload["varied"] == ["principal", "annual_rate"]
    assert wait_batch(alice, by_upload["id"])["counts"]["SUCCESS"] == 300
    assert wait_batch(alice, inline["id"])["counts"]["SUCCESS"] == 300
    assert results(alice, by_upload["id"]) == results(alice, inline["id"])
    # The batch holds its items: the upload can go, and a replay still finds the batch.
    assert alice.delete(f"/api/v1/uploads/{uploaded['id']}").status_code == 204
    assert len(results(alice, by_upload["id"])) == 300
    again = alice.post("/api/v1/batches", json=body, headers=key)
    assert again.status_code == 200 and again.json()["id"] == by_upload["id"]


def test_a_wrong_row_of_an_upload_is_named_by_its_line(alice: httpx.Client) -> None:
    text = loans_csv(5).replace("1003,0.05", "1003,lots")
    uploaded = items_upload(alice, text).json()
    before = len(alice.get("/api/v1/batches").json()["items"])
    resp = alice.post(
        "/api/v1/batches",
        json={"type": "loan_amortization", "upload_id": uploaded["id"], "base": {"years": 1}},
    )
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert problem["loc"] == ["body", "upload_id", "line 5", "annual_rate"]
    assert len(alice.get("/api/v1/batches").json()["items"]) == before  # nothing recorded


@pytest.mark.parametrize(
    ("text", "loc", "needle"),
    [
        ("principal,principal\n1,2\n", ["body", "file", "line 1"], "distinct"),
        ("principal,,years\n1,2,3\n", ["body", "file", "line 1"], "non-empty"),
        ("\n", ["body", "file"], "header row is needed"),
    ],
)
def test_an_items_header_is_checked_when_it_is_uploaded(
    alice: httpx.Client, text: str, loc: list[str], needle: str
) -> None:
    resp = items_upload(alice, text)
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert problem["loc"] == loc and needle in problem["msg"]


def test_an_upload_of_the_wrong_kind_or_owner_is_refused_naming_the_field(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    items = items_upload(alice, loans_csv(3)).json()
    prices = upload(alice, price_csv(rows=10, assets=2)[0]).json()
    assert prices["kind"] == "prices" and prices["columns"] is None

    def refusal(client: httpx.Client, upload_id: str) -> str:
        """The 422's message for a batch naming the upload; it must name `upload_id`."""
        resp = client.post(
            "/api/v1/batches",
            json={"type": "loan_amortization", "upload_id": upload_id, "base": {"years": 1}},
        )
        assert resp.status_code == 422, resp.text
        [problem] = resp.json()["detail"]
        assert problem["loc"] == ["body", "upload_id"]
        return str(problem["msg"])

    assert "price table" in refusal(alice, prices["id"])
    assert "not found" in refusal(bob, items["id"])  # another user's: as if missing
    resp = alice.post(
        "/api/v1/tasks",
        json={"type": "csv_portfolio_analytics", "params": {"upload_id": items["id"]}},
    )
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert problem["loc"] == ["body", "params", "upload_id"] and "batch items" in problem["msg"]
    kinds = {u["id"]: u["kind"] for u in alice.get("/api/v1/uploads").json()}
    assert (kinds[items["id"]], kinds[prices["id"]]) == ("items", "prices")


@pytest.mark.parametrize(
    ("rows", "uploaded"),
    [(1100, True), (5300, False)],
    ids=["over-1MiB-uploaded", "over-UPLOAD_MAX_BYTES-inline"],
)
def test_the_cli_uploads_a_large_csv_and_deletes_the_upload(
    stack: LocalStack, tmp_path: Path, rows: int, uploaded: bool
) -> None:
    """Rows padded to ~1 KB: 1,100 are over the CLI's 1 MiB inline limit, 5,300 over the
    stack's UPLOAD_MAX_BYTES (5 MiB), which the CLI then sends inline."""
    config = tmp_path / "finq.json"
    logged_in = finq_login(config, stack)
    assert logged_in.returncode == 0, logged_in.stderr
    items = tmp_path / "items.csv"
    items.write_text(loans_csv(rows, pad=1000))
    assert items.stat().st_size > (5 if not uploaded else 1) * 1024 * 1024
    out = tmp_path / "results.csv"
    ran = finq(config, "batch", "loan_amortization", "--csv", str(items), "--base", "years=1",
               "--out", str(out))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ("uploaded items.csv as batch items" in ran.stderr) is uploaded
    assert f"{rows} SUCCESS" in ran.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [float(r["principal"]) for r in table] == [1000 + i for i in range(rows)]
    admin = login(stack.url, *stack.admin)
    assert [u for u in admin.get("/api/v1/uploads").json() if u["kind"] == "items"] == []
