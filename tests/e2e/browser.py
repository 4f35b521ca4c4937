"""What the browser tests share: Debian's Chromium and its driver, the screenshot folder, and
helpers that drive the page (waits with a deadline, form fields, navigation, dialogs).
The fixtures that start the browser and log in are in conftest.py.

The screenshots in docs/screenshots/ (shown in the README) are written by these tests, on
every run, so they always show the page as it is.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "docs" / "screenshots"
DESKTOP = (1280, 900)


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
