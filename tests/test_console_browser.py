"""The operator's path through the web console in a real browser: Debian's Chromium, headless,
driven by Selenium through Debian's chromium-driver (scripts/setup.sh installs both).

A real DM server (SQLite) and a real device agent with an in-process emulator card: log in (a
wrong token first), back up to the server, the device's tree breaks, back up again, read the diff,
preview the restore, confirm it, follow the job live (htmx polling) to its end, back up to the card;
then forged forms (another origin, a wrong CSRF token) are refused. Screenshots of every page go to
a directory under pytest's tmp path (or $SIMVAULT_SCREENSHOTS), printed at the end (-s shows it).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from host.backup.keys import generate_identity
from test_dm_fixtures import ADMIN_TOKEN, DMWorld, differences
from test_dm_usecases import corrupt  # a broken update: a subtree lost, a value changed, a node added

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1360,1000")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium and chromium-driver are missing: run scripts/setup.sh (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + (f"--user-data-dir={tmp_path / 'chromium-profile'}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    def __init__(self, driver, directory: Path) -> None:
        self.driver, self.dir, self.n = driver, directory, 0
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        self.n += 1
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1360, "height": max(600, min(height, 4000)), "deviceScaleFactor": 1, "mobile": False})
        self.driver.save_screenshot(str(self.dir / f"{self.n:02d}-{name}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _wait(driver, css: str, timeout: float = 40.0, text: str | None = None):
    from selenium.webdriver.common.by import By
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found and (text is None or text in found[0].text):
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {css!r}{' with ' + repr(text) if text else ''} on {driver.current_url}:\n"
                         f"{driver.find_element(By.TAG_NAME, 'body').text[:2000]}")


def _follow_job(driver, shots: Shots, name: str) -> bool:
    """On a job's page: the state box changes by itself (htmx) until the job is final. True when the
    page was loaded before the job ended (so the box was seen to change in place)."""
    assert driver.execute_script("return typeof htmx") == "object", "htmx did not load"
    first = _wait(driver, "#job-state").get_attribute("data-state")
    url = driver.current_url
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = _wait(driver, "#job-state").get_attribute("data-state")
        except StaleElementReferenceException:  # htmx swapped the box between find and read: read again
            continue
        if state in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert driver.current_url == url                    # no reload: the fragment was swapped in place
    shots(name)
    assert state == "succeeded", f"job ended {state} (started {first}): {_wait(driver, '#job-state').text}"
    return first not in ("succeeded", "failed")


def _submit(driver, form_css: str, **fields: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    form = _wait(driver, form_css)
    for name, value in fields.items():
        el = form.find_element(By.NAME, name)
        if el.tag_name == "select":
            Select(el).select_by_value(value)
        else:
            el.clear()
            el.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


class _Attacker(BaseHTTPRequestHandler):
    """Another origin (same host, other port) with a form aimed at the console."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        page = (f'<!doctype html><form id="evil" method="post" action="{self.target}/console/backup">'
                f'<input type="hidden" name="device" value="{self.server.device_id}">'  # type: ignore[attr-defined]
                '<input type="hidden" name="target" value="server"><input type="hidden" name="csrf" value="guess">'
                '<button type="submit">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_operator_walks_from_login_to_a_finished_restore(browser, tmp_path, monkeypatch) -> None:
    from selenium.webdriver.common.by import By
    monkeypatch.setenv("SIMVAULT_PIN", "1234")
    world = DMWorld(tmp_path / "world", f"sqlite:///{tmp_path}/dm.db")
    shots = Shots(browser, Path(os.environ.get("SIMVAULT_SCREENSHOTS") or tmp_path / "screenshots"))
    live: list[bool] = []
    try:
        server_key = generate_identity(tmp_path / "server-key")
        world.web.console.use_server_key(server_key.directory)
        dev = world.add_device("phone", card="emulator", start=False)
        (dev.identity.directory / "recipients").mkdir()       # its backups are wrapped for the server too
        shutil.copy(server_key.directory / "device.enc.pub.pem", dev.identity.directory / "recipients" / "dms.pem")
        from host.dm.agent.bar import CardAccess
        dev.agent = world.start_agent(dev, card=CardAccess(emulator=dev.card_image))
        original = dev.agent.tree.snapshot_for_backup()
        base = world.url

        browser.get(base + "/console/")                       # not logged in: the login form
        _submit(browser, "#login", token="not-the-token")
        assert "wrong admin token" in _wait(browser, "#error").text
        shots("login-refused")
        assert not world.web.server.store.jobs()
        _submit(browser, "#login", token=ADMIN_TOKEN)
        _wait(browser, "#devices")
        shots("fleet-before")

        browser.find_element(By.LINK_TEXT, dev.device_id).click()
        assert _wait(browser, "#device-id").text == dev.device_id
        _submit(browser, "#backup-form", target="server")
        live.append(_follow_job(browser, shots, "job-backup-1"))
        [first] = world.web.server.store.backups(dev.device_id)

        corrupt(dev)                                          # the device breaks
        browser.get(f"{base}/console/device?id={dev.device_id}")
        _submit(browser, "#backup-form", target="server")
        live.append(_follow_job(browser, shots, "job-backup-2"))

        browser.get(f"{base}/console/device?id={dev.device_id}")
        shots("device")
        _submit(browser, "#diff-form")
        counts = _wait(browser, "#diff-counts").text
        table = _wait(browser, "#diff").text
        assert "./DevInfo/Junk" in table and "garbage" in table and "./DevDetail" in table, table
        assert "added" in counts and "removed" in counts
        shots("diff")

        browser.get(f"{base}/console/device?id={dev.device_id}")
        restore_links = browser.find_elements(By.CSS_SELECTOR, f"a[href*='backup={first['backup_id']}']")
        restore_links[0].click()
        assert _wait(browser, "#restore-id").text == first["backup_id"]
        preview = _wait(browser, "#diff").text
        assert "./DevInfo/Junk" in preview and "garbage" in preview   # what the restore undoes
        shots("restore-preview")
        browser.find_element(By.ID, "confirm-restore").click()
        live.append(_follow_job(browser, shots, "job-restore"))
        assert differences(original, dev.agent.tree.snapshot_for_backup()) == []
        assert any(live), "every job had ended before its page loaded: the live update was never seen"

        browser.get(f"{base}/console/device?id={dev.device_id}")
        _submit(browser, "#backup-form", target="card")
        live.append(_follow_job(browser, shots, "job-backup-card"))
        browser.get(base + "/console/")
        row = _wait(browser, "#devices tbody tr").text
        assert row.count("ago") >= 3 and "verified" in row and "reported" in row, row
        shots("fleet-after")
        browser.get(base + "/console/audit")
        assert "job.succeeded" in _wait(browser, "#audit").text
        shots("audit")
        jobs_before = len(world.web.server.store.jobs())

        # a forged form from another origin: the cookie goes along (same site), the Origin check refuses it
        attacker = ThreadingHTTPServer(("127.0.0.1", 0), type("A", (_Attacker,), {"target": base}))
        attacker.device_id = dev.device_id  # type: ignore[attr-defined]
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
            browser.find_element(By.CSS_SELECTOR, "#evil button").click()
            assert "another origin" in _wait(browser, "#error").text
            shots("forged-cross-origin")
        finally:
            attacker.shutdown()
            attacker.server_close()
        # a form of the console's own page whose CSRF token was tampered with
        browser.get(f"{base}/console/device?id={dev.device_id}")
        browser.execute_script("document.querySelector('#backup-form input[name=csrf]').value = 'forged'")
        _submit(browser, "#backup-form", target="server")
        assert "CSRF token is not this session's" in _wait(browser, "#error").text
        shots("forged-csrf")
        assert len(world.web.server.store.jobs()) == jobs_before

        violations = [e["message"] for e in browser.get_log("browser")
                      if "Content Security Policy" in e["message"]]
        assert not violations, violations
        print(f"\nconsole screenshots: {shots.dir}")
    finally:
        world.close()
