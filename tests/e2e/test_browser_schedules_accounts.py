"""The web page in a real headless Chromium (Debian's chromium and chromium-driver), against
the shared stack through nginx, its schedule and account screens: create a schedule from the
submit form and delete it, and manage accounts as an admin (which a user cannot). Every wait
is a condition with a deadline; helpers are in browser.py, the fixtures (one browser and fresh
accounts per module) in conftest.py.
"""

import uuid
from datetime import UTC, datetime

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
    new_tab,
    shot,
    shot_of,
    sign_in,
    text,
    until,
)
from tests.e2e.tasks import QUICK_LOAN

pytestmark = pytest.mark.e2e


def test_create_a_schedule_from_the_form_and_delete_it(
    page: WebDriver, alice_api: httpx.Client
) -> None:
    choose_type(page, "loan_amortization")
    assert not page.find_element(By.ID, "schedule-cron").is_displayed()
    Select(page.find_element(By.ID, "repeat")).select_by_value("cron")
    until(page, lambda d: d.find_element(By.ID, "schedule-cron").is_displayed(), 10, "cron")
    assert not page.find_element(By.ID, "run-at").is_displayed()
    assert page.find_element(By.ID, "submit-button").text == "Create schedule"
    assert "UTC" in text(page, "#schedule-cron-help")
    # Checked in the page first: no name, a cron of the wrong length.
    field(page, "schedule-cron", "0 6 * *")
    page.find_element(By.ID, "submit-button").click()
    assert text(page, "[data-error-for='schedule.name']") == "required"
    assert "give 5" in text(page, "[data-error-for='schedule.cron']")
    # Then by the API, each error beside its field: the cron first, then the notify target
    # (which proves the page sends notify with the schedule).
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    field(page, "schedule-name", name)
    field(page, "schedule-cron", "61 * * * *")
    field(page, "notify-webhook", "http://127.0.0.1:9/hook")
    page.find_element(By.ID, "submit-button").click()
    until(
        page,
        lambda d: "invalid cron" in text(d, "[data-error-for='schedule.cron']"),
        30,
        "the cron error",
    )
    assert page.find_element(By.ID, "schedule-cron").get_attribute("aria-invalid") == "true"
    assert page.find_element(By.ID, "schedule-name").get_attribute("aria-invalid") is None
    shot_of(page, "schedule-form", "fieldset:has(#repeat)")
    field(page, "schedule-cron", "30 5 * * 1-5")
    page.find_element(By.ID, "submit-button").click()
    until(
        page,
        lambda d: "resolves to 127.0.0.1" in text(d, "[data-error-for='notify.webhook_url']"),
        30,
        "the webhook error",
    )
    assert text(page, "[data-error-for='schedule.cron']") == ""
    page.find_element(By.ID, "notify-webhook").clear()
    Select(page.find_element(By.ID, "priority")).select_by_value("low")
    page.find_element(By.ID, "submit-button").click()
    until(
        page, lambda d: d.find_element(By.ID, "view-schedules").is_displayed(), 30, "the schedules"
    )
    until(page, lambda d: f"Schedule “{name}” created" in text(d, "#flash"), 30, "the message")
    (created,) = [s for s in alice_api.get("/api/v1/schedules").json() if s["name"] == name]
    assert (created["cron"], created["type"], created["priority"], created["notify"]) == (
        "30 5 * * 1-5",
        "loan_amortization",
        "low",
        None,
    )
    assert created["params"]["principal"] == 10000  # the form's example, defaults filled in
    row_css = f"tr[data-schedule='{created['id']}']"
    until(page, lambda d: d.find_elements(By.CSS_SELECTOR, row_css), 30, "the row")
    cells = [c.text for c in page.find_elements(By.CSS_SELECTOR, f"{row_css} td")]
    assert cells[:4] == [name, "30 5 * * 1-5", "loan_amortization", "low"]
    assert cells[4] != "—" and cells[5] == "—"  # a next run, no run yet
    shot(page, "schedules")
    # Cancelling the confirmation keeps it; accepting deletes it.
    page.find_element(By.CSS_SELECTOR, f"{row_css} [data-action=delete]").click()
    assert name in confirm(page, accept=False)
    assert page.find_elements(By.CSS_SELECTOR, row_css)
    page.find_element(By.CSS_SELECTOR, f"{row_css} [data-action=delete]").click()
    confirm(page)
    until(page, lambda d: not d.find_elements(By.CSS_SELECTOR, row_css), 30, "the row to go")
    assert f"Deleted the schedule “{name}”" in text(page, "#flash")
    assert name not in {s["name"] for s in alice_api.get("/api/v1/schedules").json()}
    # "New schedule" opens the form in schedule mode; back to a one-off task afterwards.
    assert page.find_element(By.ID, "repeat").get_attribute("value") == "once"  # reset
    page.find_element(By.ID, "schedule-new").click()
    until(page, lambda d: d.find_element(By.ID, "schedule-cron").is_displayed(), 30, "the form")
    assert page.find_element(By.ID, "submit-button").text == "Create schedule"
    Select(page.find_element(By.ID, "repeat")).select_by_value("once")
    until(page, lambda d: d.find_element(By.ID, "run-at").is_displayed(), 10, "run at")
    assert page.find_element(By.ID, "submit-button").text == "Submit"


def test_a_schedules_skipped_runs_show_under_its_last_run(
    page: WebDriver, alice_api: httpx.Client, stack: LocalStack
) -> None:
    """The beat records skipped runs on the schedule (written here as it would, since the
    shared stack's quotas are wide); the page shows how many, when and why."""
    body = {"name": "skips", "cron": "0 6 * * *", "type": "loan_amortization"}
    made = alice_api.post("/api/v1/schedules", json={**body, "params": QUICK_LOAN})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    try:
        with engine.begin() as db:
            db.execute(
                sa.text(
                    "UPDATE schedules SET skipped_count = 3, last_skip_reason = 'queued_tasks', "
                    "last_skipped_at = :at WHERE id = :id"
                ).bindparams(
                    sa.bindparam("id", type_=sa.Uuid()),
                    sa.bindparam("at", type_=sa.DateTime(timezone=True)),
                ),
                {"id": uuid.UUID(sid), "at": datetime.now(UTC)},
            )
    finally:
        engine.dispose()
    assert alice_api.get(f"/api/v1/schedules/{sid}").json()["skipped_count"] == 3
    go(page, "#/tasks")
    go(page, "#/schedules")
    row = f"tr[data-schedule='{sid}'] .skipped"
    until(page, lambda d: d.find_elements(By.CSS_SELECTOR, row), 30, "the skipped runs")
    assert "3 skipped" in text(page, row) and "queued-tasks quota full" in text(page, row)
    assert alice_api.delete(f"/api/v1/schedules/{sid}").status_code == 204


def test_a_user_does_not_see_accounts(page: WebDriver, alice_api: httpx.Client) -> None:
    go(page, "#/tasks")
    until(page, lambda d: d.find_element(By.ID, "view-tasks").is_displayed())
    assert not page.find_element(By.ID, "nav-accounts").is_displayed()
    assert page.find_element(By.ID, "nav-schedules").is_displayed()
    assert not page.find_element(By.ID, "schedules-all-box").is_displayed()
    go(page, "#/accounts")
    until(page, lambda d: "admins only" in text(d, "#flash"), 30, "refused")
    until(page, lambda d: d.current_url.endswith("#/tasks"), 30, "back to the list")
    assert not page.find_element(By.ID, "view-accounts").is_displayed()
    assert alice_api.get("/api/v1/users").status_code == 403


def test_admin_creates_an_account_that_logs_in_and_then_deletes_it(
    page: WebDriver,
    stack: LocalStack,
    accounts: dict[str, tuple[str, str]],
) -> None:
    admin_name, admin_password = stack.admin
    newcomer, password = f"carol{uuid.uuid4().hex[:6]}", "a long enough password"
    with new_tab(page, stack.url + "/") as tab:
        sign_in(tab, admin_name, admin_password)
        until(tab, lambda d: d.find_element(By.ID, "nav-accounts").is_displayed(), 30, "the link")
        tab.find_element(By.ID, "nav-accounts").click()
        until(
            tab,
            lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-user='{admin_name}']"),
            30,
            "the accounts",
        )
        assert "(you)" in text(tab, f"tr[data-user='{admin_name}']")
        assert tab.find_elements(By.CSS_SELECTOR, f"tr[data-user='{accounts['alice'][0]}']")
        # Checked in the page, then by the API: each error beside its field.
        field(tab, "account-username", "ab")
        field(tab, "account-password", "short")
        tab.find_element(By.ID, "account-submit").click()
        assert "3 to 64" in text(tab, "[data-error-for='account.username']")
        assert "12 characters" in text(tab, "[data-error-for='account.password']")
        assert tab.find_element(By.ID, "account-password").get_attribute("aria-invalid") == "true"
        field(tab, "account-username", accounts["alice"][0])
        field(tab, "account-password", password)
        tab.find_element(By.ID, "account-submit").click()
        until(
            tab,
            lambda d: text(d, "[data-error-for='account.username']").endswith(
                "is taken: usernames are unique ignoring case"
            ),
            30,
            "the 409 beside the field",
        )
        assert text(tab, "[data-error-for='account.password']") == ""
        field(tab, "account-username", newcomer)
        field(tab, "account-password", password)
        tab.find_element(By.ID, "account-submit").click()
        row = f"tr[data-user='{newcomer}']"
        until(tab, lambda d: d.find_elements(By.CSS_SELECTOR, row), 30, "the new account")
        assert text(tab, f"{row} td:nth-child(2)") == "user"
        assert tab.find_element(By.ID, "account-username").get_attribute("value") == ""
        shot(tab, "accounts")
        tab.set_window_size(390, 844)
        try:  # on a phone: no sideways scrolling, and every field labelled
            assert (
                tab.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                )
                <= 1
            )
            assert (
                tab.execute_script(
                    "return [...document.querySelectorAll("
                    "'#account-form input, #account-form select')]"
                    ".filter(e => !e.labels.length).map(e => e.id)"
                )
                == []
            )
        finally:
            tab.set_window_size(*DESKTOP)
        # An admin cannot delete themselves: the API says so.
        tab.find_element(
            By.CSS_SELECTOR, f"tr[data-user='{admin_name}'] [data-action=delete]"
        ).click()
        confirm(tab)
        until(tab, lambda d: "cannot delete themselves" in text(d, "#flash"), 30, "the 409")

        # The new user logs in, sees their (empty) page and no Accounts link.
        sign_in(tab, newcomer, password)
        assert not tab.find_element(By.ID, "nav-accounts").is_displayed()
        until(tab, lambda d: d.find_element(By.ID, "tasks-empty").is_displayed(), 30, "no tasks")

        sign_in(tab, admin_name, admin_password)
        go(tab, "#/accounts")
        until(tab, lambda d: d.find_elements(By.CSS_SELECTOR, row), 30, "the account again")
        tab.find_element(By.CSS_SELECTOR, f"{row} [data-action=delete]").click()
        assert newcomer in confirm(tab)
        until(tab, lambda d: not d.find_elements(By.CSS_SELECTOR, row), 30, "the row to go")
        assert f"Deleted the account “{newcomer}”" in text(tab, "#flash")
        tab.find_element(By.ID, "logout").click()
    refused = httpx.post(
        stack.url + "/api/v1/auth/token", data={"username": newcomer, "password": password}
    )
    assert refused.status_code == 401
    # The first tab is still alice's.
    assert text(page, "#whoami") == accounts["alice"][0]
