"""The console in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver (nothing downloads a browser), against the real loop: the gRPC server takes
SendTransaction, the Kafka scorer scores it, the console shows it live, an analyst finds
it among the flagged transactions and labels it; an analyst works an exploration item of the
review queue the job built; an analyst writes, backtests and publishes a rule that then
decides the server's scores. Each screen's screenshot lands in run/console-screens/."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from console.app import WEB_DIST
from fraudops.geoip import ip_hash
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc
from fraudops.rules import HASH_PREFIX, RuleError, check_condition, shown_value
from jobs.review_queue import run_queue
from tests.helpers.console_env import PASSWORD, add_account, insert_drift_report, insert_rows
from tests.helpers.queue_day import seed_day
from tests.helpers.real_parts import require
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

# Debian's packages; another path (e.g. one that does not exist, to see the run fail under
# CI) through CHROMIUM_PATH and CHROMEDRIVER_PATH.
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER_PATH", "/usr/bin/chromedriver"))
SCREENS = ROOT / "run" / "console-screens"
WAIT_S = 60

require(CHROMIUM.exists(), f"Chromium ({CHROMIUM})", "scripts/system-packages.sh")
require(CHROMEDRIVER.exists(), f"chromedriver ({CHROMEDRIVER})", "scripts/system-packages.sh")
require((WEB_DIST / "index.html").exists(), "the console's built frontend", "make console-web")

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(built_models, serving_root, kafka_settings, kafka_topics, database_url,
             client_token):  # fmt: skip
    # v2's output bias puts the tiny model's scores in the flagged bands.
    publish_model(built_models, serving_root, "v2")
    return replace(
        make_settings(
            **kafka_settings.kafka_login(), database_url=database_url,
            model_dir=serving_root, consumer_group=f"test-console-{uuid.uuid4().hex[:8]}",
            client_token=client_token, **kafka_topics(),
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


IP_HASH_KEY = "browser-test-ip-hash-key"


@pytest.fixture
def console(database_url, tmp_path) -> Iterator[str]:
    """The console alone (the review queue needs no scoring): yields its URL."""
    settings = replace(make_settings(database_url=database_url, model_dir=tmp_path / "models"),
                       console_port=free_port(), ip_hash_key=IP_HASH_KEY)  # fmt: skip
    with service_process("console", settings, tmp_path / "console.log", "serve"):
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
    with channel_to(settings.grpc_port, settings.client_token) as channel:
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
    browser.get(f"{loop}/queue?view=flagged&band={band}&q={target}")
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
    browser.get(f"{loop}/queue?view=flagged&model_version={version}")
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


def test_an_analyst_works_an_exploration_item_of_the_review_queue(console, browser, database_url):
    """The job builds a day's queue; the Queue screen opens on the review queue, each item
    with its reason; labelling a random ALLOW sample from it stores the label with that reason.
    The day is one of this test's own (far ahead), so no other test's rows share its queue."""
    day = date(2100, 1, 1) + timedelta(days=secrets.randbelow(3000))
    prefix = f"rq-{uuid.uuid4().hex[:6]}-"
    seed_day(database_url, day, 40, prefix=prefix)
    params = {"daily_budget": 10, "explore_share": 0.4, "random_share": 0.5, "seed": 4}
    run_queue(database_url, [day], params)
    analyst = add_account(database_url, "analyst")
    sign_in(browser, console, analyst)
    browser.get(f"{console}/queue")
    picker = (By.ID, "queue-day")
    wait_for(browser, ec.presence_of_element_located(picker))
    Select(browser.find_element(*picker)).select_by_value(day.isoformat())
    sampled = (By.CSS_SELECTOR, "[data-testid=review-queue-table] tr[data-reason=explore-random]"
               f"[data-testid^=review-item-{prefix}]")  # fmt: skip
    wait_for(browser, ec.presence_of_element_located(sampled))
    row = browser.find_element(*sampled)
    tx = row.get_attribute("data-testid").removeprefix("review-item-")
    assert "Random ALLOW sample" in row.text and "ALLOW" in row.text
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-testid=review-queue-table] tbody tr")
    assert len(rows) == 10
    shot(browser, "review-queue")
    browser.find_element(By.CSS_SELECTOR, f"[data-testid=review-fraud-{tx}]").click()
    verdict = (By.CSS_SELECTOR, f"[data-testid=review-item-{tx}] [data-testid=review-verdict]")
    wait_for(browser, ec.text_to_be_present_in_element(verdict, "FRAUD"))
    shot(browser, "review-queue-labelled")

    assert query(
        database_url,
        "SELECT label, source, queue_reason FROM feedback_labels WHERE transaction_id = %s",
        (tx,),
    ) == [("FRAUD", f"analyst:{analyst}", "explore-random")]  # fmt: skip
    audit = query(database_url, "SELECT detail->>'queue_reason' FROM audit_log"
                  " WHERE kind = 'label' AND subject = %s", (tx,))  # fmt: skip
    assert audit == [("explore-random",)]

    browser.find_element(By.CSS_SELECTOR, "[data-testid=tab-flagged]").click()
    flagged = (By.CSS_SELECTOR, "[data-testid=queue-table]")
    wait_for(browser, ec.presence_of_element_located(flagged))
    assert "view=flagged" in browser.current_url


def seed_for_rules(database_url: str, channel: str) -> list[str]:
    """Scores over amounts, types and bands in `channel` (the rule's own, so rows of other
    tests never match), a third labelled fraud and a third legitimate."""
    kinds = [(t, a, b) for t in ("TRANSFER", "PAYMENT") for a in (50.0, 6000.0, 9000.0)
             for b in ("ALLOW", "CHALLENGE", "BLOCK")]  # fmt: skip
    rows = [{"channel": channel, "type": t, "amount": a, "band": b, "user_id": 5000 + i}
            for i, (t, a, b) in enumerate(kinds)]  # fmt: skip
    ids = insert_rows(database_url, rows)
    for i, tx_id in enumerate(ids):
        if i % 3 != 2:
            label = ("FRAUD", "LEGIT")[i % 3]
            query(database_url, "INSERT INTO feedback_labels (transaction_id, label, source) "
                  "VALUES (%s, %s, 'test') RETURNING 1", (tx_id, label))  # fmt: skip
    return ids


def shown(driver, testid: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]").text


def click(driver, testid: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]").click()


def write_rule(driver, name: str, broken: str, fixed: str) -> None:
    """Write a rule whose condition does not compile, see the error at its position (as
    the checker itself places it), then fix and save it."""
    driver.find_element(By.ID, "rule-name").send_keys(name)
    Select(driver.find_element(By.ID, "rule-action")).select_by_value("block")
    driver.find_element(By.ID, "rule-condition").send_keys(broken)
    driver.find_element(By.ID, "rule-reason").send_keys("case 77: large payments, one channel")
    click(driver, "save-rule")
    with pytest.raises(RuleError) as refused:
        check_condition(broken, {})
    line, column = refused.value.position
    error = (By.CSS_SELECTOR, "[data-testid=compile-error]")
    wait_for(driver, ec.text_to_be_present_in_element(error, f"Line {line}, column {column}"))
    assert refused.value.problem in driver.find_element(*error).text
    shot(driver, "rules-compile-error")
    condition = driver.find_element(By.ID, "rule-condition")
    condition.clear()
    condition.send_keys(fixed)
    click(driver, "save-rule")
    row = (By.CSS_SELECTOR, f"[data-rule={name}]")
    wait_for(driver, ec.text_to_be_present_in_element(row, "draft"))
    assert not driver.find_element(By.CSS_SELECTOR, "[data-testid=publish-live]").is_enabled()


def check_backtest(driver, database_url: str, channel: str, seeded: list[str]) -> None:
    """The figures shown against a count written here over the period shown."""
    period = [driver.find_element(By.ID, f"backtest-{e}").get_attribute("value") + ":00+00"
              for e in ("from", "to")]  # fmt: skip
    matching = (
        "FROM scored_transactions s LEFT JOIN feedback_labels f USING (transaction_id) WHERE "
        "s.scored_at >= %s AND s.scored_at < %s AND s.amount > 5000 AND s.channel = %s"
    )
    count = f"SELECT {{}}, count(*) {matching} GROUP BY 1"
    bands = dict(query(database_url, count.format("s.band"), (*period, channel)))
    labels = dict(query(database_url, count.format("f.label"), (*period, channel)))
    for band in ("ALLOW", "CHALLENGE", "BLOCK"):
        assert shown(driver, f"backtest-band-{band}") == str(bands.get(band, 0))
    assert shown(driver, "backtest-matched") == str(sum(bands.values())) == "12"
    assert shown(driver, "backtest-fraud") == str(labels.get("FRAUD", 0))
    assert shown(driver, "backtest-legit") == str(labels.get("LEGIT", 0))
    table = shown(driver, "backtest-transactions")
    assert sum(tx_id in table for tx_id in seeded) == 12


def score_until_decided(settings, rule: str, channel: str) -> str:
    """Score fresh transactions the rule matches until the server has swapped the published
    set in; the id of the first one the rule decided."""
    with channel_to(settings.grpc_port, settings.client_token) as grpc_channel:
        stub = fraud_pb2_grpc.FraudScoringStub(grpc_channel)

        def one() -> str | None:
            tx_id = f"after-{uuid.uuid4().hex[:10]}"
            tx = transaction(0, transaction_id=tx_id, amount=7000.0, channel=channel)
            return tx_id if stub.Score(tx, timeout=30).decided_by == rule else None

        return wait_until(one, f"rule {rule} to decide a Score", WAIT_S, every=0.3)


def test_write_backtest_and_publish_a_rule_that_then_decides(loop, settings, browser, database_url):
    tag = uuid.uuid4().hex[:8]
    name, channel = f"big_one_channel_{tag}", f"rules-{tag}"
    seeded = seed_for_rules(database_url, channel)
    sign_in(browser, loop, add_account(database_url, "analyst"))
    browser.get(f"{loop}/rules")
    wait_for(browser, ec.presence_of_element_located((By.ID, "rule-condition")))
    fixed = f"amount > 5000.0 && channel == '{channel}'"
    write_rule(browser, name, f"{fixed} &&", fixed)
    click(browser, "run-backtest")
    result = (By.CSS_SELECTOR, "[data-testid=backtest-result]")
    wait_for(browser, ec.presence_of_element_located(result))
    check_backtest(browser, database_url, channel, seeded)
    shot(browser, "rules-backtest")

    publish = (By.CSS_SELECTOR, "[data-testid=publish-live]")
    wait_for(browser, ec.element_to_be_clickable(publish)).click()
    mode = (By.CSS_SELECTOR, f"[data-testid=mode-{name}]")
    wait_for(browser, ec.text_to_be_present_in_element(mode, "live"))
    shot(browser, "rules-published")
    decided = score_until_decided(settings, name, channel)
    stored = wait_until(
        lambda: query(database_url, "SELECT band, decided_by FROM scored_transactions "
                      "WHERE transaction_id = %s", (decided,)),
        "the inline score in Postgres", WAIT_S,
    )  # fmt: skip
    assert stored == [("BLOCK", name)]


def list_in_browser(browser, console: str, name: str, kind: str, values: str, reason: str):
    """Create the list `name` on the Lists screen and add `values` (the last one shown);
    returns the locator of its items."""
    browser.get(f"{console}/lists")
    wait_for(browser, main_says("New list"))
    browser.find_element(By.ID, "list-name").send_keys(name)
    Select(browser.find_element(By.ID, "list-kind")).select_by_value(kind)
    browser.find_element(By.ID, "list-reason").send_keys(reason)
    browser.find_element(By.XPATH, "//button[text()='Create list']").click()
    wait_for(browser, ec.presence_of_element_located((By.ID, "item-values")))
    browser.find_element(By.ID, "item-values").send_keys(values)
    browser.find_element(By.ID, "item-reason").send_keys(reason)
    browser.find_element(By.XPATH, "//button[text()='Add']").click()
    items = (By.CSS_SELECTOR, "[data-testid=list-items]")
    last = values.split(", ")[-1]
    wait_for(browser, ec.text_to_be_present_in_element(items, last))
    return items


def test_lists_and_shadow_matches_in_the_browser(console, browser, database_url):
    tag = uuid.uuid4().hex[:8]
    sign_in(browser, console, add_account(database_url, "analyst"))
    list_in_browser(browser, console, f"blocked_{tag}", "user", "4242, 4243",
                    "mule accounts, case 77")  # fmt: skip
    shot(browser, "lists")
    added = query(database_url, "SELECT value, added_by, reason FROM rule_list_items "
                  "WHERE list_name = %s ORDER BY value", (f"blocked_{tag}",))  # fmt: skip
    assert [(v, r) for v, _by, r in added] == [("4242", "mule accounts, case 77"),
                                              ("4243", "mule accounts, case 77")]  # fmt: skip

    ids = insert_rows(database_url, [{"amount": 1.0}] * 4)
    query(database_url, "UPDATE scored_transactions SET shadow_rules = %s "
          "WHERE transaction_id = ANY(%s) RETURNING 1", ([f"watch_{tag}"], ids))  # fmt: skip
    browser.get(f"{console}/trends")
    shadow = (By.CSS_SELECTOR, "[data-testid=shadow-matches]")
    wait_for(browser, ec.text_to_be_present_in_element(shadow, f"watch_{tag}"))
    assert shown(browser, f"shadow-total-watch_{tag}") == "4"
    browser.execute_script("document.querySelector('[data-testid=shadow-matches]')"
                           ".scrollIntoView()")  # fmt: skip
    shot(browser, "trends-shadow")


def test_an_ip_list_shown_masked_and_deleted_in_the_browser(console, browser, database_url):
    """An address added to an IP list is kept and shown only as its keyed hash, masked; the
    list is then deleted with a reason and leaves the screen and the database."""
    name = f"bad_ips_{uuid.uuid4().hex[:8]}"
    sign_in(browser, console, add_account(database_url, "analyst"))
    items = list_in_browser(browser, console, name, "ip", "203.0.113.7, 198.51.100.0/24",
                            "botnet, case 78")  # fmt: skip
    hashed = HASH_PREFIX + ip_hash("203.0.113.7", IP_HASH_KEY)
    text = browser.find_element(*items).text
    assert shown_value(hashed) in text and hashed not in text and "203.0.113.7" not in text
    shot(browser, "lists-ip-masked")
    stored = query(database_url, "SELECT value FROM rule_list_items WHERE list_name = %s "
                   "ORDER BY value", (name,))  # fmt: skip
    assert stored == [("198.51.100.0/24",), (hashed,)]
    browser.find_element(By.XPATH, "//button[text()='Delete list']").click()
    wait_for(browser, ec.invisibility_of_element_located((By.XPATH, f"//td[text()='{name}']")))
    wait_for(browser, main_says("Choose a list"))
    shot(browser, "lists-deleted")
    assert query(database_url, "SELECT count(*) FROM rule_lists WHERE name = %s", (name,)) == [(0,)]
