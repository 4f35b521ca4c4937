"""The web page in a real headless Chromium (Debian's chromium and chromium-driver), against
the shared stack through nginx, its task screens: log in, submit from the form and watch the
progress bar, see the chart, upload a CSV and analyse it, cancel a scheduled task, retry a
failed one, see a task's notifications, delete a finished one, and never see another user's
tasks or uploads. Every wait is a condition with a deadline; helpers are in browser.py, the
fixtures (one browser and fresh accounts per module) in conftest.py.
"""

import json
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.conftest import LocalStack
from tests.e2e.browser import (
    DESKTOP,
    choose_type,
    confirm,
    field,
    go,
    shot,
    task_id_from_url,
    text,
    until,
)
from tests.e2e.client import login, submit, wait_final
from tests.e2e.tasks import QUICK_LOAN

pytestmark = pytest.mark.e2e

# A Monte Carlo run of a few seconds: long enough to report progress many times.
MC_PATHS, MC_STEPS = "450000", "252"
# Valid, but its NPV overflows at run time: a task that FAILS in milliseconds.
FAILING_CASH_FLOWS = {"cash_flows": [-1] + [1] * 400, "discount_rate": -0.99}
CSV = "date,ALPHA,BETA,GAMMA\n" + "".join(
    f"2024-{1 + d // 28:02d}-{1 + d % 28:02d},{100 + d * 0.3 + (d % 7):.2f},"
    f"{50 + (d % 11) * 0.8:.2f},{20 + d * 0.05:.2f}\n"
    for d in range(120)
)

# Records every value the task page's progress bar takes (the attribute reflects `.value`),
# so a test can check the bar moved without sampling it at the right moment.
WATCH_PROGRESS = """
window.__progress = [];
const bar = document.querySelector('#task-progress');
new MutationObserver(() => window.__progress.push(Number(bar.value)))
  .observe(bar, {attributes: true, attributeFilter: ['value']});
"""


def test_submit_monte_carlo_watch_progress_and_see_the_chart(page: WebDriver) -> None:
    choose_type(page, "monte_carlo_option")
    field(page, "param-paths", MC_PATHS)
    field(page, "param-steps", MC_STEPS)
    assert page.find_element(By.CSS_SELECTOR, "label[for=param-paths]").text.startswith("Paths")
    shot(page, "submit", height=2800)
    page.execute_script(WATCH_PROGRESS)
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id = task_id_from_url(page, before)
    until(
        page,
        lambda d: any(0 < v < 1 for v in d.execute_script("return window.__progress")),
        60,
        "the progress bar to move",
    )
    until(page, lambda d: text(d, "#task-status") == "SUCCESS", 120, "SUCCESS")
    until(
        page,
        lambda d: d.find_element(By.ID, "task-progress").get_attribute("value") == "1",
        30,
        "the bar at 100%",
    )
    # The counts agree with 100% (the last throttled report no longer sticks).
    samples = int(MC_PATHS) // 2
    until(
        page,
        lambda d: text(d, "#task-progress-text") == f"100% · {samples:,} of {samples:,} samples",
        30,
        "the final counts",
    )
    seen = page.execute_script("return window.__progress")
    assert seen == sorted(seen), seen  # it only ever moved forward
    until(
        page,
        lambda d: d.execute_script(
            "const i = document.querySelector('#task-chart');"
            "return !document.querySelector('#task-chart-card').hidden && i.complete "
            "&& i.naturalWidth > 0"
        ),
        30,
        "the chart",
    )
    assert page.find_element(By.ID, "task-chart").get_attribute("alt")
    assert "price" in text(page, "#task-result")
    assert task_id in text(page, "#task-title")
    shot(page, "task", height=1700)


@pytest.mark.parametrize("name", ["implied_volatility", "american_option", "dated_bond_analytics"])
def test_the_generated_form_submits_each_new_types_example_unchanged(
    page: WebDriver, alice_api: httpx.Client, name: str
) -> None:
    """The form is built from the type's JSON schema and prefilled with its example: lists of
    choices (option types, day counts, frequencies) and of dates must come back as the same
    JSON, and the task must succeed."""
    example = {t["name"]: t["example"] for t in alice_api.get("/api/v1/task-types").json()}[name]
    choose_type(page, name)
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id = task_id_from_url(page, before)
    until(page, lambda d: text(d, "#task-status") == "SUCCESS", 120, "SUCCESS")
    params = alice_api.get(f"/api/v1/tasks/{task_id}").json()["params"]
    assert {k: v for k, v in params.items() if k in example} == example


def test_upload_a_csv_and_analyse_it(page: WebDriver, tmp_path: Path) -> None:
    go(page, "#/uploads")
    until(page, lambda d: d.find_element(By.ID, "view-uploads").is_displayed())
    bad = tmp_path / "bad.csv"
    bad.write_text("date,A\n2024-01-01,1\n2024-01-02,x\n2024-01-03,2\n")
    page.find_element(By.ID, "upload-file").send_keys(str(bad))
    page.find_element(By.ID, "upload-submit").click()
    until(page, lambda d: "line 3, column 'A'" in text(d, "#upload-error"), 30, "the error")
    assert page.find_element(By.ID, "upload-file").get_attribute("aria-invalid") == "true"
    good = tmp_path / "three-assets.csv"
    good.write_text(CSV)
    page.find_element(By.ID, "upload-file").send_keys(str(good))
    page.find_element(By.ID, "upload-submit").click()
    row_css = "#upload-table tbody tr"
    until(
        page,
        lambda d: any(
            "three-assets.csv" in r.text for r in d.find_elements(By.CSS_SELECTOR, row_css)
        ),
        30,
        "row",
    )
    assert page.find_element(By.ID, "upload-error").get_attribute("hidden") is not None
    shot(page, "uploads")
    row = next(
        r for r in page.find_elements(By.CSS_SELECTOR, row_css) if "three-assets.csv" in r.text
    )
    upload_id = row.get_attribute("data-upload")
    row.find_element(By.CSS_SELECTOR, "[data-action=analyse]").click()
    until(
        page,
        lambda d: (
            Select(d.find_element(By.ID, "task-type")).first_selected_option.get_attribute("value")
            == "csv_portfolio_analytics"
        ),
        30,
        "the analytics form",
    )
    select = Select(page.find_element(By.ID, "param-upload_id"))
    assert select.first_selected_option.get_attribute("value") == upload_id
    field(page, "param-weights", "0.5, 0.3, 0.2")
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id_from_url(page, before)
    until(page, lambda d: text(d, "#task-status") == "SUCCESS", 60, "SUCCESS")
    until(
        page,
        lambda d: (
            not d.find_element(By.ID, "task-chart-card").get_attribute("hidden")
            and d.execute_script("return document.querySelector('#task-chart').naturalWidth") > 0
        ),
        30,
        "the chart",
    )
    result = text(page, "#task-result")
    assert "per_asset" in result and "ALPHA" in result and "var" in result


def test_cancel_a_scheduled_task_from_the_list(page: WebDriver) -> None:
    choose_type(page, "loan_amortization")
    # A loopback webhook is refused, on its field (the shared stack keeps the safe default).
    field(page, "notify-webhook", "http://127.0.0.1:9/hook")
    page.find_element(By.ID, "submit-button").click()
    until(
        page,
        lambda d: "resolves to 127.0.0.1" in text(d, "[data-error-for='notify.webhook_url']"),
        30,
        "the webhook error",
    )
    assert page.find_element(By.ID, "notify-webhook").get_attribute("aria-invalid") == "true"
    page.find_element(By.ID, "notify-webhook").clear()
    page.execute_script(
        "const d = new Date(Date.now() + 3600e3), p = (n) => String(n).padStart(2, '0');"
        "document.querySelector('#run-at').value = `${d.getFullYear()}-${p(d.getMonth() + 1)}"
        "-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;"
    )
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id = task_id_from_url(page, before)
    until(page, lambda d: text(d, "#task-status") == "PENDING", 30, "PENDING")
    go(page, "#/tasks")
    row = f"tr[data-task='{task_id}']"
    until(page, lambda d: d.find_elements(By.CSS_SELECTOR, row), 30, "the row")
    shot(page, "tasks")
    page.find_element(By.CSS_SELECTOR, f"{row} [data-action=cancel]").click()
    until(page, lambda d: text(d, f"{row} .badge") == "CANCELLED", 30, "CANCELLED")
    # The badge may turn first (the SSE stream), the message when the cancel's answer arrives.
    until(
        page,
        lambda d: f"Cancel requested for {task_id}" in text(d, "#flash"),
        30,
        "the cancel message",
    )
    page.execute_script("document.querySelector('#run-at').value = '';")


def test_retry_a_failed_task(page: WebDriver, alice_api: httpx.Client) -> None:
    task = submit(alice_api, "cash_flow_analysis", FAILING_CASH_FLOWS)
    assert wait_final(alice_api, task["id"])["status"] == "FAILED"
    go(page, f"#/tasks/{task['id']}")
    until(page, lambda d: "NPV overflows" in text(d, "#task-error"), 30, "the error")
    assert "attempt 1" in text(page, "#task-attempts")
    page.find_element(By.ID, "task-retry").click()
    until(
        page,
        lambda d: "attempt 2" in text(d, "#task-attempts") and text(d, "#task-status") == "FAILED",
        60,
        "the second attempt to fail",
    )
    statuses = [e["status"] for e in alice_api.get(f"/api/v1/tasks/{task['id']}/history").json()]
    assert statuses == ["PENDING", "RUNNING", "FAILED", "PENDING", "RUNNING", "FAILED"]
    until(
        page,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task-timeline li")) == 6,
        30,
        "the timeline",
    )


def test_a_result_too_big_for_the_view_is_read_from_its_link(
    page: WebDriver, alice_api: httpx.Client
) -> None:
    """4,000 options store about 450 kB, over RESULT_INLINE_MAX_BYTES (256 KiB): the view
    carries `result_url` instead of the arrays, and the page reads the whole from it."""
    n = 4000
    params = {
        "spot": [80.0 + i * 0.01 for i in range(n)],
        "strike": 100.0,
        "maturity": 0.5,
        "rate": 0.02,
        "volatility": 0.3,
        "option_type": "put",
    }
    done = wait_final(alice_api, submit(alice_api, "black_scholes", params)["id"])
    assert done["status"] == "SUCCESS" and done["result_truncated"], done
    go(page, f"#/tasks/{done['id']}")
    until(page, lambda d: f"… ({n})" in text(d, "#task-result"), 30, "the whole result")
    rows = page.find_elements(By.CSS_SELECTOR, "#task-result th")
    assert {r.text for r in rows} >= {"price", "delta", "gamma", "vega", "theta", "rho"}


def test_another_users_tasks_and_uploads_are_nowhere(
    page: WebDriver,
    stack: LocalStack,
    accounts: dict[str, tuple[str, str]],
) -> None:
    bob = login(stack.url, *accounts["bob"])
    theirs = submit(bob, "loan_amortization", QUICK_LOAN, delay_seconds=3600)
    their_upload = bob.post("/api/v1/uploads", files={"file": ("bob.csv", CSV.encode())}).json()
    go(page, "#/tasks")
    rows = "#task-table tbody tr"
    until(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) >= 4, 30, "alice's rows")
    assert theirs["id"] not in page.page_source
    # Alice has nothing pending; Bob does. The filtered list must be empty.
    Select(page.find_element(By.ID, "filter-status")).select_by_visible_text("PENDING")
    page.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    until(page, lambda d: d.find_element(By.ID, "tasks-empty").is_displayed(), 30, "no rows")
    assert page.find_elements(By.CSS_SELECTOR, rows) == []
    Select(page.find_element(By.ID, "filter-status")).select_by_visible_text("any")
    page.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    until(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) >= 4, 30, "rows again")
    go(page, "#/uploads")
    until(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-table tbody tr"), 30)
    assert their_upload["id"] not in page.page_source
    assert "bob.csv" not in page.page_source
    go(page, f"#/tasks/{theirs['id']}")
    until(page, lambda d: "Task not found" in text(d, "#flash"), 30, "not found")
    until(page, lambda d: d.current_url.endswith("#/tasks"), 30, "back to the list")
    assert theirs["id"] not in text(page, "main")
    bob.post(f"/api/v1/tasks/{theirs['id']}/cancel")


def test_readable_on_a_phone_and_usable_with_the_keyboard(page: WebDriver) -> None:
    page.set_window_size(390, 844)
    try:
        for hash_, view in (
            ("#/submit", "view-submit"),
            ("#/tasks", "view-tasks"),
            ("#/uploads", "view-uploads"),
            ("#/schedules", "view-schedules"),
        ):
            go(page, hash_)

            def shown(d: WebDriver, v: str = view) -> bool:
                return d.find_element(By.ID, v).is_displayed()

            until(page, shown)
            overflow = page.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"{hash_} scrolls sideways by {overflow}px"
        go(page, "#/submit")
        until(page, lambda d: d.find_element(By.ID, "view-submit").is_displayed())
        unlabelled = page.execute_script(
            "return [...document.querySelectorAll('#submit-form input, #submit-form select,"
            " #submit-form textarea, #upload-form input')].filter(e => !e.labels.length)"
            ".map(e => e.id)"
        )
        assert unlabelled == []
        # Tab reaches the submit button, which is a real button the keyboard can press.
        page.find_element(By.ID, "task-type").click()
        reachable = page.execute_script(
            "return [...document.querySelectorAll('#submit-form *')].filter(e => e.tabIndex >= 0"
            " && !e.disabled && e.offsetParent !== null).map(e => e.id)"
        )
        assert "submit-button" in reachable and "notify-webhook" in reachable
        assert "repeat" in reachable
    finally:
        page.set_window_size(*DESKTOP)


def test_deliveries_show_on_the_task_page(
    page: WebDriver, stack: LocalStack, alice_api: httpx.Client
) -> None:
    """A webhook refused at send time (its stored target now points at loopback) is listed
    on the task page with its outcome."""
    task = submit(
        alice_api,
        "loan_amortization",
        QUICK_LOAN,
        delay_seconds=3600,
        notify={"webhook_url": "http://93.184.215.14/finq"},
    )
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET notify = :n WHERE id = :id"),
            {
                "n": json.dumps({"webhook_url": f"http://127.0.0.1:9/{uuid.uuid4().hex}"}),
                "id": task["id"].replace("-", ""),
            },
        )
    engine.dispose()
    go(page, f"#/tasks/{task['id']}")
    until(page, lambda d: d.find_element(By.ID, "task-deliveries-card").is_displayed(), 30)
    page.find_element(By.ID, "task-cancel").click()
    until(
        page,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#task-deliveries tr[data-delivery=refused]"),
        30,
        "the refused delivery",
    )
    row = text(page, "#task-deliveries tbody tr")
    assert "webhook" in row and "CANCELLED" in row and "resolves to 127.0.0.1" in row


def test_delete_a_finished_task_from_its_page(page: WebDriver, alice_api: httpx.Client) -> None:
    pending = submit(alice_api, "loan_amortization", QUICK_LOAN, delay_seconds=3600)
    go(page, f"#/tasks/{pending['id']}")
    until(page, lambda d: text(d, "#task-status") == "PENDING", 30, "PENDING")
    assert not page.find_element(By.ID, "task-delete").is_displayed()  # cancel it first
    alice_api.post(f"/api/v1/tasks/{pending['id']}/cancel")

    task = submit(alice_api, "loan_amortization", QUICK_LOAN)
    assert wait_final(alice_api, task["id"])["status"] == "SUCCESS"
    go(page, f"#/tasks/{task['id']}")
    until(
        page,
        lambda d: text(d, "#task-status") == "SUCCESS" and task["id"] in text(d, "#task-title"),
        30,
        "SUCCESS",
    )
    delete = page.find_element(By.ID, "task-delete")
    assert delete.is_displayed()
    delete.click()
    assert task["id"] in confirm(page, accept=False)
    assert alice_api.get(f"/api/v1/tasks/{task['id']}").status_code == 200
    delete.click()
    confirm(page)
    until(page, lambda d: d.current_url.endswith("#/tasks"), 30, "back to the list")
    until(page, lambda d: f"Task {task['id']} deleted." in text(d, "#flash"), 30, "the message")
    assert alice_api.get(f"/api/v1/tasks/{task['id']}").status_code == 404
    until(page, lambda d: d.find_element(By.ID, "view-tasks").is_displayed(), 30, "the list")
    assert not page.find_elements(By.CSS_SELECTOR, f"tr[data-task='{task['id']}']")

    # Refused by the API (here: deleted meanwhile, elsewhere): its reason, and no navigation.
    gone = submit(alice_api, "loan_amortization", QUICK_LOAN)
    wait_final(alice_api, gone["id"])
    go(page, f"#/tasks/{gone['id']}")
    until(
        page,
        lambda d: (
            d.find_element(By.ID, "task-delete").is_displayed()
            and gone["id"] in text(d, "#task-title")
        ),
        30,
        "the task page",
    )
    assert alice_api.delete(f"/api/v1/tasks/{gone['id']}").status_code == 204
    page.find_element(By.ID, "task-delete").click()
    confirm(page)
    until(page, lambda d: text(d, "#flash") == "Task not found", 30, "the API's reason")
    assert page.current_url.endswith(f"#/tasks/{gone['id']}")


def test_the_form_offers_priority_high_only_to_a_role_allowed_it(page: WebDriver) -> None:
    """alice is a plain user: `high` (HIGH_PRIORITY_ROLES, admins by default) is not offered,
    as /auth/me's `priorities` says; the other two are."""
    offered = {
        o.get_attribute("value"): o.is_enabled()
        for o in page.find_elements(By.CSS_SELECTOR, "#priority option")
    }
    assert offered == {"high": False, "normal": True, "low": True}
