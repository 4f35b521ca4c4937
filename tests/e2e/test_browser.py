"""The web page in a real headless Chromium (Debian's chromium and chromium-driver), against
the shared stack through nginx: log in, submit from the form and watch the progress bar,
see the chart, upload a CSV and analyse it, cancel a scheduled task, retry a failed one, and
never see another user's tasks or uploads. Every wait is a condition with a deadline.

The screenshots in docs/screenshots/ (shown in the README) are written by these tests, on
every run, so they always show the page as it is.
"""

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from selenium import webdriver
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
    f"{50 + (d % 11) * 0.8:.2f},{20 + d * 0.05:.2f}\n" for d in range(120))

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
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--lang=en-US"):
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
def page(browser: WebDriver, stack: LocalStack, accounts: dict[str, tuple[str, str]]
         ) -> WebDriver:
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


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30,
          what: str = "condition") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message=what)


def shot(driver: WebDriver, name: str, height: int | None = None) -> None:
    """Screenshot of the page from its top, `height` pixels tall (default: the window)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if height:
        driver.set_window_size(DESKTOP[0], height)
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    if height:
        driver.set_window_size(*DESKTOP)


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
    until(driver, lambda d: "#/tasks/" in d.current_url and d.current_url != before,
          what="the new task's page")
    task_id = str(driver.current_url.rsplit("/", 1)[-1])
    until(driver, lambda d: task_id in text(d, "#task-title"), what="the new task's title")
    return task_id


def test_submit_monte_carlo_watch_progress_and_see_the_chart(page: WebDriver) -> None:
    choose_type(page, "monte_carlo_option")
    field(page, "param-paths", MC_PATHS)
    field(page, "param-steps", MC_STEPS)
    assert page.find_element(By.CSS_SELECTOR, "label[for=param-paths]").text.startswith("Paths")
    shot(page, "submit", height=2700)
    page.execute_script(WATCH_PROGRESS)
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id = task_id_from_url(page, before)
    until(page, lambda d: any(0 < v < 1 for v in d.execute_script("return window.__progress")),
          60, "the progress bar to move")
    until(page, lambda d: text(d, "#task-status") == "SUCCESS", 120, "SUCCESS")
    until(page, lambda d: d.find_element(By.ID, "task-progress").get_attribute("value") == "1",
          30, "the bar at 100%")
    assert text(page, "#task-progress-text").startswith("100%")
    seen = page.execute_script("return window.__progress")
    assert seen == sorted(seen), seen  # it only ever moved forward
    until(page, lambda d: d.execute_script(
        "const i = document.querySelector('#task-chart');"
        "return !document.querySelector('#task-chart-card').hidden && i.complete "
        "&& i.naturalWidth > 0"), 30, "the chart")
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
    until(page, lambda d: any("three-assets.csv" in r.text
                              for r in d.find_elements(By.CSS_SELECTOR, row_css)), 30, "row")
    assert page.find_element(By.ID, "upload-error").get_attribute("hidden") is not None
    shot(page, "uploads")
    row = next(r for r in page.find_elements(By.CSS_SELECTOR, row_css)
               if "three-assets.csv" in r.text)
    upload_id = row.get_attribute("data-upload")
    row.find_element(By.CSS_SELECTOR, "[data-action=analyse]").click()
    until(page, lambda d: Select(d.find_element(By.ID, "task-type")).first_selected_option
          .get_attribute("value") == "csv_portfolio_analytics", 30, "the analytics form")
    select = Select(page.find_element(By.ID, "param-upload_id"))
    assert select.first_selected_option.get_attribute("value") == upload_id
    field(page, "param-weights", "0.5, 0.3, 0.2")
    before = page.current_url
    page.find_element(By.ID, "submit-button").click()
    task_id_from_url(page, before)
    until(page, lambda d: text(d, "#task-status") == "SUCCESS", 60, "SUCCESS")
    until(page, lambda d: not d.find_element(By.ID, "task-chart-card").get_attribute("hidden")
          and d.execute_script("return document.querySelector('#task-chart').naturalWidth")
          > 0, 30, "the chart")
    result = text(page, "#task-result")
    assert "per_asset" in result and "ALPHA" in result and "var" in result


def test_cancel_a_scheduled_task_from_the_list(page: WebDriver) -> None:
    choose_type(page, "loan_amortization")
    # A loopback webhook is refused, on its field (the shared stack keeps the safe default).
    field(page, "notify-webhook", "http://127.0.0.1:9/hook")
    page.find_element(By.ID, "submit-button").click()
    until(page, lambda d: "resolves to 127.0.0.1" in text(
        d, "[data-error-for='notify.webhook_url']"), 30, "the webhook error")
    assert page.find_element(By.ID, "notify-webhook").get_attribute("aria-invalid") == "true"
    page.find_element(By.ID, "notify-webhook").clear()
    page.execute_script(
        "const d = new Date(Date.now() + 3600e3), p = (n) => String(n).padStart(2, '0');"
        "document.querySelector('#run-at').value = `${d.getFullYear()}-${p(d.getMonth() + 1)}"
        "-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;")
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
    until(page, lambda d: f"Cancel requested for {task_id}" in text(d, "#flash"), 30,
          "the cancel message")
    page.execute_script("document.querySelector('#run-at').value = '';")


def test_retry_a_failed_task(page: WebDriver, alice_api: httpx.Client) -> None:
    task = submit(alice_api, "cash_flow_analysis", FAILING_CASH_FLOWS)
    assert wait_final(alice_api, task["id"])["status"] == "FAILED"
    go(page, f"#/tasks/{task['id']}")
    until(page, lambda d: "NPV overflows" in text(d, "#task-error"), 30, "the error")
    assert "attempt 1" in text(page, "#task-attempts")
    page.find_element(By.ID, "task-retry").click()
    until(page, lambda d: "attempt 2" in text(d, "#task-attempts")
          and text(d, "#task-status") == "FAILED", 60, "the second attempt to fail")
    statuses = [e["status"] for e in alice_api.get(f"/api/v1/tasks/{task['id']}/history").json()]
    assert statuses == ["PENDING", "RUNNING", "FAILED", "PENDING", "RUNNING", "FAILED"]
    until(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task-timeline li")) == 6, 30,
          "the timeline")


def test_another_users_tasks_and_uploads_are_nowhere(
    page: WebDriver, stack: LocalStack, accounts: dict[str, tuple[str, str]],
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
        for hash_, view in (("#/submit", "view-submit"), ("#/tasks", "view-tasks"),
                            ("#/uploads", "view-uploads")):
            go(page, hash_)
            until(page, lambda d, v=view: d.find_element(By.ID, v).is_displayed())
            overflow = page.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{hash_} scrolls sideways by {overflow}px"
        go(page, "#/submit")
        until(page, lambda d: d.find_element(By.ID, "view-submit").is_displayed())
        unlabelled = page.execute_script(
            "return [...document.querySelectorAll('#submit-form input, #submit-form select,"
            " #submit-form textarea, #upload-form input')].filter(e => !e.labels.length)"
            ".map(e => e.id)")
        assert unlabelled == []
        # Tab reaches the submit button, which is a real button the keyboard can press.
        page.find_element(By.ID, "task-type").click()
        reachable = page.execute_script(
            "return [...document.querySelectorAll('#submit-form *')].filter(e => e.tabIndex >= 0"
            " && !e.disabled && e.offsetParent !== null).map(e => e.id)")
        assert "submit-button" in reachable and "notify-webhook" in reachable
    finally:
        page.set_window_size(*DESKTOP)


def test_deliveries_show_on_the_task_page(page: WebDriver, stack: LocalStack,
                                          alice_api: httpx.Client) -> None:
    """A webhook refused at send time (its stored target now points at loopback) is listed
    on the task page with its outcome."""
    task = submit(alice_api, "loan_amortization", QUICK_LOAN, delay_seconds=3600,
                  notify={"webhook_url": "http://93.184.215.14/finq"})
    engine = sa.create_engine(stack.info["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tasks SET notify = :n WHERE id = :id"), {
            "n": json.dumps({"webhook_url": f"http://127.0.0.1:9/{uuid.uuid4().hex}"}),
            "id": task["id"].replace("-", "")})
    engine.dispose()
    go(page, f"#/tasks/{task['id']}")
    until(page, lambda d: d.find_element(By.ID, "task-deliveries-card").is_displayed(), 30)
    page.find_element(By.ID, "task-cancel").click()
    until(page, lambda d: d.find_elements(By.CSS_SELECTOR,
                                          "#task-deliveries tr[data-delivery=refused]"),
          30, "the refused delivery")
    row = text(page, "#task-deliveries tbody tr")
    assert "webhook" in row and "CANCELLED" in row and "resolves to 127.0.0.1" in row
