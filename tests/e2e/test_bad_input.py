"""Input that once answered 500 or slipped through, sent through nginx to the shared stack:
dates UTC cannot hold, starts years away, crons that never fire and asset names a spreadsheet
or a chart would misread are each a 422 naming the field."""

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import login
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN

pytestmark = pytest.mark.e2e

# Valid ISO 8601 times whose UTC falls outside what a datetime (and the database) can hold.
OUTSIDE_UTC = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.fixture(scope="module")
def user(stack: LocalStack) -> httpx.Client:
    admin = login(stack.url, *stack.admin)
    return login(stack.url, *new_user(admin))


def refusal(resp: httpx.Response) -> dict[str, Any]:
    """The one problem of a 422."""
    assert resp.status_code == 422, resp.text
    (problem,) = resp.json()["detail"]
    assert isinstance(problem, dict)
    return problem


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.mark.parametrize("when", OUTSIDE_UTC)
def test_a_run_at_outside_utc_is_a_422_naming_run_at(user: httpx.Client, when: str) -> None:
    resp = user.post(
        "/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN, "run_at": when}
    )
    assert refusal(resp)["loc"] == ["body", "run_at"]


def test_a_run_at_is_bounded_like_delay_seconds(user: httpx.Client) -> None:
    body = {"type": "loan_amortization", "params": QUICK_LOAN}
    too_far = refusal(user.post("/api/v1/tasks", json={**body, "run_at": later(days=367)}))
    assert too_far["loc"] == ["body", "run_at"] and "366 days" in too_far["msg"]
    too_old = refusal(user.post("/api/v1/tasks", json={**body, "run_at": later(days=-367)}))
    assert too_old["loc"] == ["body", "run_at"]
    within = user.post("/api/v1/tasks", json={**body, "run_at": later(days=365)})
    assert within.status_code == 202, within.text
    assert within.json()["status"] == "PENDING" and within.json()["scheduled_for"]
    assert user.post(f"/api/v1/tasks/{within.json()['id']}/cancel").status_code == 200


@pytest.mark.parametrize("when", OUTSIDE_UTC)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_a_list_filter_outside_utc_is_a_422_naming_it(
    user: httpx.Client, name: str, when: str
) -> None:
    problem = refusal(user.get("/api/v1/tasks", params={name: when}))
    assert problem["loc"] == ["query", name]


def test_list_filters_at_the_edges_of_utc_and_without_a_zone_answer(user: httpx.Client) -> None:
    for params in (
        {"created_after": "0001-01-01T00:00:00Z", "created_before": "9999-12-31T23:59:59Z"},
        {"created_after": "2000-01-01T00:00:00"},  # no zone: read as UTC
    ):
        resp = user.get("/api/v1/tasks", params=params)
        assert resp.status_code == 200, (params, resp.text)


@pytest.mark.parametrize("when", OUTSIDE_UTC)
def test_a_cursor_carrying_a_date_outside_utc_is_a_422_naming_cursor(
    user: httpx.Client, when: str
) -> None:
    cursor = base64.urlsafe_b64encode(f"{when}|{uuid.uuid4()}".encode()).decode()
    assert refusal(user.get("/api/v1/tasks", params={"cursor": cursor}))["loc"] == [
        "query",
        "cursor",
    ]


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 30 2 * 30"])
def test_a_cron_that_never_fires_is_a_422_naming_cron(user: httpx.Client, cron: str) -> None:
    resp = user.post(
        "/api/v1/schedules",
        json={"name": "never", "cron": cron, "type": "loan_amortization", "params": QUICK_LOAN},
    )
    problem = refusal(resp)
    assert problem["loc"] == ["body", "cron"] and "never fires" in problem["msg"]
    assert user.get("/api/v1/schedules").json() == []


@pytest.mark.parametrize(
    "header",
    [
        '=HYPERLINK("http://evil.example")',
        "+1+1",
        "-1+1",
        "@SUM(A1)",
        "_hidden",
        "ABC\u202eFED",
        "$\\frac{1}{2}$",
    ],
)
def test_an_asset_name_a_spreadsheet_or_chart_would_misread_is_a_422_naming_it(
    user: httpx.Client, header: str
) -> None:
    quoted = '"' + header.replace('"', '""') + '"'
    data = f"date,SAFE,{quoted}\n2024-01-02,1,2\n2024-01-03,1,2\n2024-01-04,1,2\n".encode()
    resp = user.post("/api/v1/uploads", files={"file": ("p.csv", data, "text/csv")})
    problem = refusal(resp)
    assert problem["loc"] == ["body", "file"]
    assert f"column 3's name {header!r}" in problem["msg"], problem
    assert user.get("/api/v1/uploads").json() == []


BOND = {"settlement": "2025-03-15", "maturity": "2035-08-15", "coupon_rate": 0.045}


@pytest.mark.parametrize(
    ("type_", "params", "field", "needle"),
    [
        (
            "dated_bond_analytics",
            {**BOND, "maturity": "2024-01-01", "yield": 0.05},
            "maturity",
            "after the settlement date",
        ),
        (
            "dated_bond_analytics",
            {**BOND, "day_count": "ACT/ACT ISDA", "yield": 0.05},
            "day_count",
            "30/360 US",
        ),
        ("dated_bond_analytics", {**BOND, "price": 0.01}, "price", "implies a yield outside"),
        (
            "implied_volatility",
            {
                "price": [1, 2],
                "spot": 100,
                "strike": [90, 95, 100],
                "maturity": 1,
                "rate": 0.0,
                "option_type": "call",
            },
            "strike",
            "equal length",
        ),
        (
            "black_scholes",
            {
                "grid": True,
                "spot": [100.0] * 2000,
                "strike": [90.0] * 1000,
                "maturity": 1,
                "rate": 0.0,
                "volatility": 0.2,
                "option_type": "call",
            },
            "strike",
            "grid has 2,000,000 combinations (spot 2000 x strike 1000)",
        ),
        (
            "american_option",
            {
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.05,
                "volatility": 0.2,
                "option_type": "put",
                "method": "pde",
            },
            "method",
            "binomial",
        ),
        ("loan_amortization", {**QUICK_LOAN, "rounding": "euro"}, "rounding", "cent"),
    ],
)
def test_bad_parameters_of_the_new_calculations_are_a_422_naming_the_field(
    user: httpx.Client, type_: str, params: dict[str, Any], field: str, needle: str
) -> None:
    resp = user.post("/api/v1/tasks", json={"type": type_, "params": params})
    assert resp.status_code == 422, resp.text
    # A value-or-list field reports one problem per form it could take, all under the field.
    problems = resp.json()["detail"]
    assert all(p["loc"][:3] == ["body", "params", field] for p in problems), problems
    assert any(needle in p["msg"] for p in problems), problems
