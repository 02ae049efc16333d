"""The report in a real browser: headless Chromium loads the pages from disk.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON messages), which needs nothing beyond the standard
library. The page's Network domain reports every request the page makes, file:// and data:
included, so "no network request" is checked on what the browser actually fetched; a control
page with one external image proves that such a request would be seen.

Skips only when no Chromium binary is installed (Debian: ``apt-get install chromium``; the CI
script installs it). Screenshots (1280 px wide and a 390 px phone) go to the test's temporary
folder; their paths are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ltbench.report.published import default_published_dir, load_published
from ltbench.report.site import write_report
from helpers import small_store

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe"]
PAGE_FACTS = """(() => {
  const images = [...document.images];
  return {
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tbody tr").length,
    images: images.length,
    imagesDecoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    bold: document.querySelectorAll("td.best").length,
    published: document.querySelectorAll("span.pub").length,
    footer: document.querySelector("footer") ? document.querySelector("footer").innerText : "",
    pageWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
    captionsPastTheScreen: [...document.querySelectorAll("caption")]
      .filter(c => c.getBoundingClientRect().right > window.innerWidth + 0.5).length,
    height: document.documentElement.scrollHeight,
  };
})()"""


class Chromium:
    """A headless Chromium with one tab, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def wire_pipes() -> None:  # in the child: DevTools reads fd 3, writes fd 4
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.process = subprocess.Popen(
            [BROWSER, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_pipes, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self.send(f"{domain}.enable", session=True)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = 60.0) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._message(deadline))

    def load(self, url: str, width: int, mobile: bool = False) -> dict:
        """Load ``url`` at a viewport ``width`` px wide; the page facts, network log reset."""
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile},
                  session=True)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        result = self.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True},
                           session=True)
        return result["result"]["value"]

    def requested_urls(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self.events
                if event.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        shot = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True}, session=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (TimeoutError, EOFError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store = small_store(root / "results")
    write_report(store, root / "report", published=load_published(default_published_dir()))
    return root / "report"


def _local_only(urls: list[str]) -> list[str]:
    return [url for url in urls if not url.startswith(("file://", "data:"))]


def test_network_monitor_sees_an_external_request(browser, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><img src="http://127.0.0.1:9/pixel.png" alt="x">')
    browser.load(control.as_uri(), 1280)
    assert _local_only(browser.requested_urls()) == ["http://127.0.0.1:9/pixel.png"]


def test_dataset_page_renders_offline(browser, report_dir, tmp_path):
    page = report_dir / "cifar10-lt.html"
    facts = browser.load(page.as_uri(), 1280)
    urls = browser.requested_urls()
    assert urls[0] == page.as_uri()
    assert _local_only(urls) == []
    # Error table, many/medium/few tables at IF 100 and 10, cost table; 5 configurations.
    assert facts["tables"] == 4
    assert facts["rows"] == 5 + 5 + 4 + 5
    # Training counts, per-class x2, curves x2, ε histograms x2, per-class ε means x2
    # (meta-ce at two factors) and error vs. cost x2: all decoded.
    assert facts["images"] == 11 and facts["imagesDecoded"] == 11
    # Every configuration trained for 200 epochs has a published number at both factors.
    assert facts["published"] == 8
    assert facts["bold"] >= 2
    assert "GPU-hours" in facts["footer"] and "torch" in facts["footer"]
    assert facts["pageWidth"] <= facts["viewportWidth"]
    shot = browser.screenshot(tmp_path / "cifar10-lt-1280.png")
    print(f"\nscreenshot (1280 px): {shot}")
    assert shot.stat().st_size > 10_000


def test_rank_page_renders_offline_with_its_chart(browser, report_dir, tmp_path):
    """The cross-dataset page: one rank table (4 methods) and the critical-difference chart,
    linked from every page's navigation."""
    page = report_dir / "ranks.html"
    facts = browser.load(page.as_uri(), 1280)
    assert _local_only(browser.requested_urls()) == []
    assert (facts["tables"], facts["rows"]) == (1, 4)
    assert facts["images"] == 1 and facts["imagesDecoded"] == 1
    assert facts["pageWidth"] <= facts["viewportWidth"]
    print(f"\nscreenshot (1280 px): {browser.screenshot(tmp_path / 'ranks-1280.png')}")
    for name in ("index.html", "cifar10-lt.html"):
        assert 'href="ranks.html"' in (report_dir / name).read_text(encoding="utf-8")


SORTED_ORDER = """(() => {
  const table = document.querySelector("table");
  const labels = () => [...table.tBodies[0].rows].map(row => row.cells[0].textContent);
  const header = table.querySelectorAll("thead th")[1];
  header.click();
  const ascending = labels();
  header.click();
  return {ascending, descending: labels(), sort: header.getAttribute("aria-sort")};
})()"""


def test_a_header_click_sorts_the_table_and_a_second_reverses_it(browser, report_dir):
    """Progressive enhancement: the error table's IF 100 column sorted by mean error (rows
    with — last), then the other way; the page made no request for it."""
    browser.load((report_dir / "cifar10-lt.html").as_uri(), 1280)
    result = browser.send("Runtime.evaluate", {"expression": SORTED_ORDER,
                                               "returnByValue": True}, session=True)
    order = result["result"]["value"]
    # IF 100 means: meta-ce 23, ldam-drw 24, focal 29.5, ce [epochs=200] 31, ce [epochs=1] 80
    assert order["ascending"] == ["meta-ce", "ldam-drw", "focal", "ce [epochs=200]",
                                  "ce [epochs=1]"]
    assert order["descending"] == order["ascending"][::-1] and order["sort"] == "descending"
    assert _local_only(browser.requested_urls()) == []


def test_pages_fit_a_phone_screen(browser, report_dir, tmp_path):
    for name, tables in (("index.html", 2), ("cifar10-lt.html", 3), ("ranks.html", 1)):
        facts = browser.load((report_dir / name).as_uri(), 390, mobile=True)
        assert _local_only(browser.requested_urls()) == []
        assert facts["tables"] >= tables
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        assert facts["pageWidth"] <= facts["viewportWidth"], name
        # A wide table's caption stays on the screen, wrapped, while the table scrolls.
        assert facts["captionsPastTheScreen"] == 0, name
        shot = browser.screenshot(tmp_path / name.replace(".html", "-390.png"))
        print(f"\nscreenshot (390 px): {shot}")
