"""The dashboard in a real browser (Debian's chromium + chromium-driver, selenium) against a real daemon:
log in, see the nodes and blocks the API reports, scale a block from the page, a viewer sees no scale
button, a forged cross-origin write is refused, XSS in a block name renders as text. Screenshots of
each page go to $AIOSD_TEST_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon
from tests.integration.test_console_roles import call, free_port

selenium = pytest.importorskip("selenium", reason="selenium is not installed (scripts/test.sh installs it)")
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(CHROMIUM is None or not Path(DRIVER).exists(),
                                reason="Debian's chromium and chromium-driver are not installed")
XSS = "x<img src=x onerror=alert(1)>"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo"


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(fn: Any, timeout_s: float = 45) -> Any:  # generous: a loaded box can stall the daemon for seconds
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def preview_of(browser: Any, doc: str) -> None:
    """Type `doc` into the preview form and press Preview (again if the page was rendered anew meanwhile)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            area = browser.find_element(By.ID, "preview-doc")
            area.clear()
            area.send_keys(doc)
            if area.get_attribute("value") != doc:
                return False
            browser.find_element(By.ID, "preview-btn").click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(attempt)


def test_dashboard_in_chromium(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("AIOSD_TEST_SCREENSHOTS", str(tmp_path / "screenshots")))
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    d = Daemon(tmp_path, extra=["--api-port", str(port)]).start()
    try:
        op = d.json("user", "create", "olga", "--role", "operator")["token"]
        viewer = d.json("user", "create", "vic", "--role", "viewer")["token"]
        assert call(port, "POST", "/v1/controller/placements", op,
                    {"block_id": "demo", "count": 1, "reserve_only": True})[0] < 300
        base = f"http://127.0.0.1:{port}/ui/"
        pages = f"http://127.0.0.1:{port}/ui/?"  # page URLs: base + hash would not reload

        def login(token: str) -> None:
            browser.get(f"{base}?logout=1")  # the page forgets the session's token: the login form shows
            wait_for(lambda: browser.find_element(By.ID, "token").is_displayed())
            browser.find_element(By.ID, "token").send_keys(token)
            browser.find_element(By.ID, "login-btn").click()
            wait_for(lambda: browser.find_element(By.ID, "overview-status"))

        login(op)
        assert "olga (operator)" in browser.find_element(By.ID, "who").text
        browser.save_screenshot(str(shots / "overview.png"))
        node_id = d.json("status")["node_id"]
        for page in ("nodes", "blocks", "vdags", "llm", "tasks", "policies", "assets", "audit", "preview"):
            browser.get(pages + "#" + page)
            wait_for(lambda p=page: browser.find_element(By.ID, "page-" + p))
            browser.save_screenshot(str(shots / f"{page}.png"))
        browser.get(pages + "#nodes")
        assert wait_for(lambda: node_id in browser.find_element(By.ID, "nodes").text)
        browser.get(pages + "#blocks")
        # The page re-renders on live updates: every read and action looks its element up again (wait_for
        # retries a stale one).
        blocks = wait_for(lambda: browser.find_element(By.ID, "blocks").text)
        assert "demo" in blocks
        api_blocks = call(port, "GET", "/v1/controller/placements", op)[1]["blocks"]
        assert api_blocks and all(b in blocks for b in api_blocks)

        def scale_to_2() -> bool:
            count = browser.find_element(By.CSS_SELECTOR, "input.scale-count[data-block='demo']")
            count.clear()
            count.send_keys("2")
            if count.get_attribute("value") != "2":
                return False
            browser.find_element(By.CSS_SELECTOR, "button.scale[data-block='demo']").click()
            return True

        wait_for(scale_to_2)
        wait_for(lambda: len(call(port, "GET", "/v1/controller/placements", op)[1]["blocks"]["demo"]["instances"])
                 == 2, timeout_s=60)
        browser.save_screenshot(str(shots / "blocks-scaled.png"))
        # A forged request from the page's session: another origin, or no bearer header, is refused.
        forged = browser.execute_script(
            "return fetch('/v1/controller/placements', {method: 'POST', headers: {'Content-Type': "
            "'application/json'}, body: JSON.stringify({block_id: 'demo', count: 5})}).then(r => r.status)")
        assert forged == 401
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/controller/placements", method="POST",
                                     data=json.dumps({"block_id": "demo", "count": 5}).encode(),
                                     headers={"Authorization": f"Bearer {op}", "Origin": "http://evil.example",
                                              "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
        e.value.close()
        assert len(call(port, "GET", "/v1/controller/placements", op)[1]["blocks"]["demo"]["instances"]) == 2
        # Placement preview: the example's documents, dry-run, listed; a broken one is refused with the reason.
        browser.get(pages + "#preview")
        docs = [json.loads((EXAMPLE / n).read_text()) for n in ("component.json", "block.json")]
        preview_of(browser, json.dumps(docs))
        assert "echo" in wait_for(lambda: browser.find_element(By.ID, "preview-docs").text)
        assert "echo-1" not in set(call(port, "GET", "/v1/controller/placements", op)[1]["blocks"])
        preview_of(browser, '{"kind": "nonsense"}')
        assert "refused" in wait_for(lambda: browser.find_element(By.ID, "preview-error")).text
        browser.save_screenshot(str(shots / "preview.png"))
        # A viewer sees the blocks but no scale button.
        login(viewer)
        browser.get(pages + "#blocks")
        wait_for(lambda: "demo" in browser.find_element(By.ID, "blocks").text)
        assert browser.find_elements(By.CSS_SELECTOR, "button.scale") == []
        browser.save_screenshot(str(shots / "blocks-viewer.png"))
        # XSS: a path with markup lands in the audit trail; the admin's audit page shows it as text.
        call(port, "PUT", "/v1/registry/specs/" + urllib.parse.quote(XSS), op, {"a": 1})
        login((d.data_dir / "api.token").read_text().strip())
        browser.get(pages + "#audit")
        assert XSS in wait_for(lambda: browser.find_element(By.ID, "audit").text)
        assert browser.execute_script("return document.querySelectorAll('#main img').length") == 0
        browser.save_screenshot(str(shots / "audit-xss.png"))
        # The overview lists alerts (or says there are none); deleting a block takes two clicks.
        browser.get(pages + "#overview")
        # (Once in five runs on a loaded box, the daemon took ~9 s to answer this page's first request;
        # the cause is not found yet: see the note on issue 20.)
        assert wait_for(lambda: browser.find_element(By.ID, "alerts").text)
        browser.get(pages + "#blocks")

        def click_delete() -> bool:
            browser.find_element(By.CSS_SELECTOR, "button.delete[data-block='demo']").click()
            return True

        wait_for(click_delete)
        assert "demo" in call(port, "GET", "/v1/controller/placements", op)[1]["blocks"]  # armed, not yet deleted
        wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "button.delete[data-block='demo']").text
                 == "Confirm delete")
        wait_for(click_delete)
        wait_for(lambda: "demo" not in call(port, "GET", "/v1/controller/placements", op)[1]["blocks"], timeout_s=60)
    finally:
        d.stop()
