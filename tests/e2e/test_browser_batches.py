"""The web page's Batches screen in a real headless Chromium against the shared stack: run a
CSV as a batch, watch it end, page its items, download its results; a wrong row is named; a
file over 1 MiB is uploaded (kind items), run from its upload, and the upload deleted."""

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.e2e.browser import field, go, shot, text, until
from tests.e2e.test_batch_uploads import loans_csv

pytestmark = pytest.mark.e2e

CSV = "principal,annual_rate\n1000,0.05\n2000,0.04\n3000,0.03\n"


def open_batches(page: WebDriver) -> None:
    go(page, "#/batches")
    until(page, lambda d: d.find_element(By.ID, "view-batches").is_displayed(), 10, "batches")
    Select(page.find_element(By.ID, "batch-type")).select_by_value("loan_amortization")


def test_run_a_csv_batch_from_the_page_and_download_its_results(
    page: WebDriver, alice_api: httpx.Client
) -> None:
    open_batches(page)
    page.execute_script("document.getElementById('batch-csv').value = arguments[0];", CSV)
    field(page, "batch-base", '{"years": 1}')
    page.find_element(By.ID, "batch-submit").click()
    until(page, lambda d: text(d, "#batch-status") == "SUCCESS", 60, "the batch to end")
    assert text(page, "#batch-counts") == "3 SUCCESS"
    assert page.find_element(By.ID, "batch-progress").get_attribute("value") == "1"
    rows = page.find_elements(By.CSS_SELECTOR, "#batch-items tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td").text for r in rows] == ["0", "1", "2"]
    assert "payment" in rows[0].text
    page.find_element(By.ID, "batch-download").click()
    link = until(
        page,
        lambda d: (
            (d.find_element(By.ID, "batch-link").get_attribute("href") or "").startswith("blob:")
            and d.find_element(By.ID, "batch-link")
        ),
        30,
        "the download",
    )
    assert link.get_attribute("download").endswith(".csv")
    batch_id = text(page, "#batch-id")
    assert alice_api.get(f"/api/v1/batches/{batch_id}").json()["counts"]["SUCCESS"] == 3
    assert page.find_element(By.CSS_SELECTOR, f"#batch-table tr[data-batch='{batch_id}']")
    shot(page, "batch-done")


def test_a_wrong_row_is_named_by_its_line(page: WebDriver) -> None:
    open_batches(page)
    wrong = CSV.replace("2000,0.04", "2000,lots")
    page.execute_script("document.getElementById('batch-csv').value = arguments[0];", wrong)
    field(page, "batch-base", '{"years": 1}')
    page.find_element(By.ID, "batch-submit").click()
    until(page, lambda d: d.find_element(By.ID, "batch-error").is_displayed(), 30, "the error")
    assert "csv.line 3.annual_rate" in text(page, "#batch-error")


def test_a_large_file_runs_from_an_upload_that_is_deleted_after(
    page: WebDriver, alice_api: httpx.Client, tmp_path: Path
) -> None:
    open_batches(page)
    big = tmp_path / "big.csv"
    big.write_text(loans_csv(1100, pad=1000))  # ~1.1 MB: over the page's 1 MiB inline limit
    page.find_element(By.ID, "batch-file").send_keys(str(big))
    until(page, lambda d: d.find_element(By.ID, "batch-upload-note").is_displayed(), 30, "upload")
    assert "big.csv: 1100 items" in text(page, "#batch-upload-note")
    assert page.find_element(By.ID, "batch-csv").get_attribute("value") == ""
    [upload] = [u for u in alice_api.get("/api/v1/uploads").json() if u["kind"] == "items"]
    field(page, "batch-base", '{"years": 1}')
    before = text(page, "#batch-id")  # an earlier test's batch, if any
    page.find_element(By.ID, "batch-submit").click()

    def ended(d: WebDriver) -> bool:
        return text(d, "#batch-id") not in ("", before) and text(d, "#batch-status") == "SUCCESS"

    until(page, ended, 90, "the new batch to end")
    assert text(page, "#batch-counts") == "1100 SUCCESS"
    assert alice_api.get(f"/api/v1/uploads/{upload['id']}").status_code == 404
