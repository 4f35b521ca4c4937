"""The web page in a real headless Chromium (Debian's chromium and chromium-driver), against
the shared stack through nginx: log in, submit from the form and watch the progress bar,
see the chart, upload a CSV and analyse it, cancel a scheduled task, retry a failed one,
delete a finished one, create and delete a schedule, manage accounts as an admin, and never
see another user's tasks or uploads. Every wait is a condition with a deadline.

The screenshots in docs/screenshots/ (shown in the README) are written by these tests, on
every run, so they always show the page as it is.
"""

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import ROOT, LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "docs" / "screenshots"
DESKTOP = (1280, 900)
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


def until(
    driver: WebDriver,
    condition: Callable[[WebDriver], Any],
    timeout: float = 30,
    what: str = "condition",
) -> Any:
    # A list re-rendered between finding an element and reading it (a refresh after an
    # action, an SSE update) leaves a stale reference: look again at the next poll.
    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, message=what)


def shot(driver: WebDriver, name: str, height: int | None = None) -> None:
    """Screenshot of the page from its top, `height` pixels tall (default: the window)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if height:
        driver.set_window_size(DESKTOP[0], height)
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    if height:
        driver.set_window_size(*DESKTOP)


def sign_in(driver: WebDriver, username: str, password: str) -> None:
    """Log in through the form (logging out first when someone is logged in)."""
    if driver.find_element(By.ID, "logout").is_displayed():
        driver.find_element(By.ID, "logout").click()
    until(driver, lambda d: d.find_element(By.ID, "login-username").is_displayed())
    field(driver, "login-username", username)
    field(driver, "login-password", password)
    driver.find_element(By.ID, "login-submit").click()
    until(driver, lambda d: d.find_element(By.ID, "whoami").text == username, what="logged in")


@contextmanager
def new_tab(driver: WebDriver, url: str) -> Iterator[WebDriver]:
    """A fresh tab (its own sessionStorage, so its own login) at `url`; closed afterwards,
    back to the tab that was in front."""
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        driver.get(url)
        yield driver
    finally:
        driver.close()
        driver.switch_to.window(first)


def confirm(driver: WebDriver, accept: bool = True) -> str:
    """Answer the page's confirm() dialog; returns its text."""
    alert = until(driver, lambda d: d.switch_to.alert, 10, "the confirm dialog")
    message = str(alert.text)
    if accept:
        alert.accept()
    else:
        alert.dismiss()
    return message


def shot_of(driver: WebDriver, name: str, css: str) -> None:
    """Screenshot of one element (scrolled into view), e.g. a part of a long form."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    element = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView(); document.activeElement.blur();", element)
    element.screenshot(str(SHOTS / f"{name}.png"))


def go(driver: WebDriver, hash_: str) -> None:
    driver.execute_script("location.hash = arguments[0];", hash_)


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def field(driver: WebDriver, element_id: str, value: str) -> WebElement:
    el = driver.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(value)
    return el


def choose_type(driver: WebDriver, name: str) -> None:
    go(driver, "#/submit")
    until(driver, lambda d: d.find_element(By.ID, "view-submit").is_displayed())
    Select(driver.find_element(By.ID, "task-type")).select_by_value(name)


def task_id_from_url(driver: WebDriver, before: str) -> str:
    """The id of the task page the browser went to after a submit: a page other than `before`
    (the previous task's page may still be on screen when the click returns), showing its id."""
    until(
        driver,
        lambda d: "#/tasks/" in d.current_url and d.current_url != before,
        what="the new task's page",
    )
    task_id = str(driver.current_url.rsplit("/", 1)[-1])
    until(driver, lambda d: task_id in text(d, "#task-title"), what="the new task's title")
    return task_id


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
    assert text(page, "#task-progress-text").startswith("100%")
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
            until(page, lambda d, v=view: d.find_element(By.ID, v).is_displayed())
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
            lambda d: text(d, "[data-error-for='account.username']") == "Username already exists",
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
