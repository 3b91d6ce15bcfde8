"""The console in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver (nothing downloads a browser), against the real loop: the gRPC server takes
SendTransaction, the Kafka scorer scores it, the console shows it live, an analyst finds
it in the queue and labels it. Each screen's screenshot lands in run/console-screens/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from console.app import WEB_DIST
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc
from tests.helpers.console_env import PASSWORD, add_account, insert_drift_report, insert_rows
from tests.helpers.serving_env import (
    ROOT,
    channel_to,
    free_port,
    make_settings,
    publish_model,
    query,
    service_process,
    transaction,
    wait_serving,
    wait_until,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENS = ROOT / "run" / "console-screens"
WAIT_S = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="Debian's chromium and chromium-driver are not installed",
    ),
    pytest.mark.skipif(
        not (WEB_DIST / "index.html").exists(), reason="run `make console-web` first"
    ),
]


@pytest.fixture
def settings(built_models, serving_root, kafka_settings, kafka_topics, database_url):
    # v2's output bias puts the tiny model's scores in the flagged bands.
    publish_model(built_models, serving_root, "v2")
    return replace(
        make_settings(
            **kafka_settings.kafka_login(), database_url=database_url,
            model_dir=serving_root, consumer_group=f"test-console-{uuid.uuid4().hex[:8]}",
            **kafka_topics(),
        ),
        console_port=free_port(),
    )  # fmt: skip


@pytest.fixture
def loop(settings, tmp_path) -> Iterator[str]:
    """Server, scorer and console running; yields the console's URL."""
    with (
        service_process("serving.server", settings, tmp_path / "server.log"),
        service_process("serving.scorer", settings, tmp_path / "scorer.log"),
        service_process("console", settings, tmp_path / "console.log", "serve"),
    ):
        with channel_to(settings.grpc_port) as channel:
            wait_serving(channel)
        url = settings.console_url()
        wait_until(lambda: _answers(f"{url}/api/health"), "the console", WAIT_S, every=0.3)
        yield url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(driver, condition):
    return WebDriverWait(driver, WAIT_S).until(condition)


def sign_in(driver, url: str, name: str) -> None:
    driver.get(url + "/")
    wait_for(driver, ec.presence_of_element_located((By.ID, "name")))
    shot(driver, "sign-in")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(
        driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=whoami]"), name)
    )


def main_says(text: str):
    """The screen's main area holds `text` (as written, before CSS capitalises titles)."""
    return lambda driver: (
        text in driver.execute_script("return document.querySelector('main')?.textContent ?? ''")
    )


def no_alert(driver) -> bool:
    try:
        _ = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_stream_queue_and_label_in_the_browser(loop, settings, browser, database_url):
    analyst = add_account(database_url, "analyst")
    sign_in(browser, loop, analyst)
    wait_for(browser, ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "[data-testid=live-connected]"), "connected"))  # fmt: skip

    ids = [f"browser-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    with channel_to(settings.grpc_port) as channel:
        stub = fraud_pb2_grpc.FraudIngestionStub(channel)
        for i, tx_id in enumerate(ids):
            stub.SendTransaction(transaction(i, transaction_id=tx_id, user_id=777), timeout=30)
    live_table = (By.CSS_SELECTOR, "[data-testid=live-table]")
    wait_for(browser, ec.text_to_be_present_in_element(live_table, ids[0]))
    wait_for(browser, ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "[data-testid=served-version]"), "v2"))  # fmt: skip
    shot(browser, "live")

    rows = wait_until(
        lambda: query(database_url, "SELECT transaction_id, band FROM scored_transactions"
                      " WHERE transaction_id = ANY(%s) AND band <> 'ALLOW'", (ids,)),
        "a flagged transaction in Postgres", WAIT_S,
    )  # fmt: skip
    target, band = rows[0]
    browser.get(f"{loop}/queue?band={band}&q={target}")
    queue_table = (By.CSS_SELECTOR, "[data-testid=queue-table]")
    wait_for(browser, ec.text_to_be_present_in_element(queue_table, target))
    shot(browser, "queue")
    browser.find_element(By.LINK_TEXT, target).click()
    wait_for(
        browser, ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=label-controls]"))
    )
    browser.find_element(By.ID, "note").send_keys("seen in the browser test")
    browser.find_element(By.XPATH, "//button[text()='FRAUD']").click()
    wait_for(browser, ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "[data-testid=current-label]"), "FRAUD"))  # fmt: skip
    shot(browser, "transaction")

    assert query(
        database_url, "SELECT label, source, note FROM feedback_labels WHERE transaction_id = %s",
        (target,),
    ) == [("FRAUD", f"analyst:{analyst}", "seen in the browser test")]  # fmt: skip
    audit = query(database_url, "SELECT detail->>'source' FROM audit_log WHERE kind = 'label'"
                  " AND subject = %s", (target,))  # fmt: skip
    assert audit == [(f"analyst:{analyst}",)]

    insert_drift_report(database_url, "v2", alarm=True)
    browser.get(f"{loop}/models")
    wait_for(browser, main_says("Published versions"))
    drift = browser.find_element(By.CSS_SELECTOR, "[data-testid=drift]")
    assert "log_amount[TRANSFER], type_mix" in drift.text and "ALARM" in drift.text
    shot(browser, "models")
    browser.get(f"{loop}/trends")
    wait_for(browser, main_says("Daily digests"))
    shot(browser, "trends")


def test_markup_in_a_channel_is_shown_as_text(loop, browser, database_url):
    channel = "<img src=x onerror=alert(1)>"
    version = f"xss-{uuid.uuid4().hex[:8]}"
    (tx,) = insert_rows(database_url, [{"model_version": version, "channel": channel}])
    sign_in(browser, loop, add_account(database_url, "viewer"))
    browser.get(f"{loop}/queue?model_version={version}")
    table = (By.CSS_SELECTOR, "[data-testid=queue-table]")
    wait_for(browser, ec.text_to_be_present_in_element(table, tx))
    assert channel in browser.find_element(*table).text
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=queue-table] img") == []
    browser.find_element(By.LINK_TEXT, tx).click()
    cell = (By.CSS_SELECTOR, "[data-field=channel]")
    wait_for(browser, ec.text_to_be_present_in_element(cell, channel))
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    # A viewer sees no label buttons.
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=label-controls]") == []
    shot(browser, "transaction-xss")
    assert no_alert(browser)
