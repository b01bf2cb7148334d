"""Browser-test fixtures: the session app served for real, and Debian's headless Chromium.

The live server serves the very `app` fixture of tests/conftest.py (same database, same storage,
same clean tables per test), so an e2e test can use the factories and then check what the browser
did directly in the database.

Why no `playwright install`: this machine has no internet beyond package registries, so Playwright
drives the Debian `chromium` package (`make browsers` installs it). A missing browser is a failure,
never a skip: a browser suite that silently does not run proves nothing.
"""

from __future__ import annotations

import io
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, got_request_exception
from playwright.sync_api import Page, expect
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.conftest import TEST_PASSWORD
from tests.fakes import serve_in_thread

CHROMIUM = Path(os.environ.get("OBLAKO_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# --headless=new comes with headless=True. The rest keep Chromium quiet and deterministic in a
# root container without network: no sandbox (we run as root), no GPU, no background fetches,
# and a fake camera/microphone that is granted without a prompt (the consultation room).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

# A phone-sized context (an iPhone 12/13/14 screen): most patients use the cabinet on a phone.
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
    "locale": "ru-RU",
    "timezone_id": "Europe/Moscow",
}

# Playwright's default 30 s hides hangs for too long on a 2-core machine; 15 s is still generous.
DEFAULT_TIMEOUT_MS = 15_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is a browser test: `-m "not e2e"` deselects it in one go."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Keep each phase's report on the item so the page fixture knows, at teardown, whether the
    # test failed and a screenshot is worth taking.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request (dozens of static files per page would bury a failure's
    report); errors still reach the log, and the app's exceptions are collected below."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class LiveServer:
    host: str
    port: int
    # Tracebacks of exceptions the app raised while serving; the browser only sees "500".
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __call__(self, path: str = "/") -> str:
        return self.url + path


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[LiveServer]:
    """The session app on 127.0.0.1:<free port>, threaded like a real server.

    SERVER_NAME is "localhost" in the test config. Flask 3.1 no longer refuses a request whose
    Host differs from SERVER_NAME, and no longer derives the session cookie's domain from it, so
    nothing is overridden here: changing it would change url_for() for every other test that
    shares this app. The browser is sent to http://localhost:<port>, so the Host matches the
    configured name anyway. One limit: url_for(..., _external=True) yields http://localhost/...
    without the port; our views redirect with relative URLs, which is what the e2e path needs.
    """
    server: BaseWSGIServer = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler
    )
    # Port 0: the OS picks a free port, so parallel sessions (and the dev server) never collide.
    port = server.server_port
    live = LiveServer(host="localhost", port=port)

    def _record(sender: Flask, exception: BaseException, **extra: object) -> None:
        live.errors.append("".join(traceback.format_exception(exception)))

    got_request_exception.connect(_record, app)
    thread = serve_in_thread(server, "e2e-live-server")
    try:
        yield live
    finally:
        got_request_exception.disconnect(_record, app)
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# Every page reports a Content-Security-Policy violation on its console (the browser also logs
# its own "Refused to ..." line): a blocked script is a broken button, and an inline script or
# handler that still needed 'unsafe-inline' must fail the suite, not go unnoticed.
CSP_PROBE = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.effectiveDirective + " blocked " +
                (e.blockedURI || "inline code") + " at " + (e.sourceFile || document.URL) +
                ":" + e.lineNumber + " " + (e.sample || ""));
});
"""


def _is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation:") or "Content Security Policy" in text


class CspWatchingBrowser:
    """The browser, whose every context (the tests' own desk and guest contexts included) carries
    the CSP probe and collects what it reports; the autouse `no_csp_violations` checks it."""

    def __init__(self, browser) -> None:
        self._browser = browser
        self.violations: list[str] = []

    def new_context(self, **kwargs):
        context = self._browser.new_context(**kwargs)
        context.add_init_script(CSP_PROBE)
        context.on("console", self._console)
        return context

    def _console(self, msg) -> None:
        if _is_csp_violation(msg.text):
            where = msg.page.url if msg.page is not None else "?"
            self.violations.append(f"{where}: {msg.text}")

    def __getattr__(self, name: str):
        return getattr(self._browser, name)


@pytest.fixture(autouse=True)
def no_csp_violations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test at teardown when any page of it reported a CSP violation."""
    if "browser" not in request.fixturenames:
        yield
        return
    watcher: CspWatchingBrowser = request.getfixturevalue("browser")
    watcher.violations.clear()
    yield
    if watcher.violations:
        found = "\n".join(dict.fromkeys(watcher.violations))
        watcher.violations.clear()
        pytest.fail(f"Content-Security-Policy violations:\n{found}", pytrace=False)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. The browser tests need Debian's chromium: run "
            "`make browsers` (apt-get install chromium chromium-driver) or `make test`, which "
            "installs it first. Never `playwright install` -- there is no internet here.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() gives every browser a fresh temporary profile, removed on close.
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield CspWatchingBrowser(browser)
        finally:
            browser.close()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


def room_log(page) -> str:
    """The consultation room's own record of its decisions (room/core.js `trace`), if any."""
    try:
        return page.evaluate("() => (window.oblakoRoom && window.oblakoRoom.log || []).join('\\n')")
    except Exception as exc:  # a closed or crashed page
        return f"(unavailable: {exc})"


@pytest.fixture
def phone_page(request: pytest.FixtureRequest, browser, live_server: LiveServer):
    """A fresh phone-sized browser context and page; a full-page screenshot when the test fails."""
    live_server.errors.clear()
    context = browser.new_context(base_url=live_server.url, **PHONE)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    # Console errors and failed requests end up in the failure report: often the real cause.
    console: list[str] = []
    page.on(
        "console",
        lambda msg: (
            console.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    yield page
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    if failed:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = ARTIFACTS / _artifact_name(request.node.nodeid)
        try:
            page.screenshot(path=f"{stem}.png", full_page=True)
            Path(f"{stem}.html").write_text(page.content(), encoding="utf-8")
            Path(f"{stem}.console.txt").write_text(
                f"url: {page.url}\n"
                + "\n".join(console)
                + "\n\nroom log:\n"
                + room_log(page)
                + "\n\nserver errors:\n"
                + "\n".join(live_server.errors),
                encoding="utf-8",
            )
            print(f"\n[e2e] failure artifacts: {stem}.png / .html / .console.txt")
            for tb in live_server.errors:
                print(f"\n[e2e] server error:\n{tb}")
        except Exception as exc:  # a dead page must not hide the test's own failure
            print(f"\n[e2e] could not save failure artifacts: {exc}")
    context.close()


DESKTOP = {
    "viewport": {"width": 1280, "height": 800},
    "locale": "ru-RU",
    "timezone_id": "Europe/Moscow",
}


def sign_in(page: Page, live_server: LiveServer, username: str) -> None:
    page.goto(live_server("/login/"))
    page.locator("#username").fill(username)
    page.locator("#password").fill(TEST_PASSWORD)
    page.locator("form input[type=submit], form button[type=submit]").first.click()
    expect(page).not_to_have_url(re.compile(r"/login/?$"))


@pytest.fixture
def desk_page(request: pytest.FixtureRequest, browser, live_server: LiveServer) -> Iterator[Page]:
    """The doctor's desktop browser: a second context, own cookies; a screenshot on failure."""
    context = browser.new_context(base_url=live_server.url, **DESKTOP)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = ARTIFACTS / (_artifact_name(request.node.nodeid) + "_doctor")
        try:
            page.screenshot(path=f"{stem}.png", full_page=True)
            Path(f"{stem}.html").write_text(page.content(), encoding="utf-8")
            Path(f"{stem}.room-log.txt").write_text(room_log(page), encoding="utf-8")
            print(f"\n[e2e] doctor's page: {stem}.png / .html / .room-log.txt (url: {page.url})")
        except Exception as exc:  # a dead page must not hide the test's own failure
            print(f"\n[e2e] could not save the doctor's page: {exc}")
    context.close()


def pdf_text(data: bytes) -> str:
    """The text of a downloaded PDF (pypdf), to check what it says."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def wait_until(page: Page, script: str, done: Callable[[Any], bool], timeout_ms: int) -> Any:
    """Polls `script` (it may return a promise: evaluate awaits it) until done(value).
    Not wait_for_function: that takes a returned promise itself as truthy, and returns at
    once whatever the promise will say."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        value = page.evaluate(script)
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{script} never satisfied the wait; last: {value!r}")
        page.wait_for_timeout(300)


def enter_room_from_consultation_page(page: Page, consultation_url: str) -> None:
    page.goto(consultation_url)
    join = page.locator("#join-room")
    expect(join).to_have_text(re.compile("Войти в консультацию"))
    join.click()
    expect(page).to_have_url(re.compile(r"/media/room/"))
    # The pre-call check: the fake devices are granted, the preview runs, the meter moves.
    expect(page.locator("#precall")).to_contain_text("Камера и микрофон работают")
    page.wait_for_function("() => document.getElementById('local-video').videoWidth > 0")


# =============================================================================================
# Tap counting (issue 17, item 10) — shared by the pathway tests: the referral SMS to her
# documents (test_sms_taps.py) and the notification to the video room. Self-contained block.
# =============================================================================================

# Reports every trusted click and every form submission to Python (a binding survives the page
# being replaced by the next one, which a counter inside the page would not). What one tap sets
# off in the same task — the submission a submit button's click causes, the click a label
# forwards to its checkbox — is that one tap, not more: the first report in a task holds the
# rest back until the task is over.
TAP_PROBE = """
(() => {
  let busy = false;
  const describe = (el) => {
    if (!el || !el.tagName) return String(el);
    const text = (el.innerText || el.value || el.getAttribute("aria-label") || "").trim();
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (text ? " «" + text.slice(0, 40) + "»" : "");
  };
  const report = (kind, el) => {
    if (busy) return;
    busy = true;
    setTimeout(() => { busy = false; }, 0);
    if (window.__oblakoTap) window.__oblakoTap(kind, describe(el));
  };
  document.addEventListener("click", (e) => { if (e.isTrusted) report("click", e.target); }, true);
  document.addEventListener("submit", (e) => report("submit", e.submitter || e.target), true);
})();
"""


@dataclass
class Tap:
    kind: str  # "open" (a link in a message), "click", "submit"
    what: str  # the element or address
    url: str  # the page it happened on


class TapCounter:
    """A person's taps in one browser context: clicks and form submissions, as the pages saw
    them (typing and picking files are not taps and make no click). Opening a link from a
    message — the SMS, a notification — is a tap too: open() counts it and goes there.

        taps = TapCounter(page.context)
        taps.open(page, sms_link)
        ...
        taps.report("referral SMS → documents")  # prints the count and each tap
    """

    def __init__(self, context) -> None:
        self.taps: list[Tap] = []
        context.expose_binding("__oblakoTap", self._record)
        context.add_init_script(TAP_PROBE)

    def _record(self, source, kind: str, what: str) -> None:
        frame = source.get("frame") if isinstance(source, dict) else None
        self.taps.append(Tap(kind, what, frame.url if frame is not None else "?"))

    def open(self, page: Page, url: str) -> None:
        self.taps.append(Tap("open", url, url))
        page.goto(url)

    @property
    def count(self) -> int:
        return len(self.taps)

    def report(self, pathway: str) -> str:
        lines = [f"[taps] {pathway}: {self.count}"]
        lines += [f"[taps]   {n}. {t.kind}: {t.what} ({t.url})" for n, t in enumerate(self.taps, 1)]
        text = "\n".join(lines)
        print("\n" + text)
        return text


# Elements whose right edge passes the viewport: named in the failure so the culprit is found
# without a screenshot (at most a few, outermost first).
_OVERFLOWING = """
() => {
  const width = window.innerWidth;
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 1) {
      if (!out.some((o) => o.el.contains(el))) {
        const cls = typeof el.className === "string" ? el.className.trim() : "";
        out.push({el, text: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
          (cls ? "." + cls.split(/\\s+/).join(".") : "") + " right=" + Math.round(box.right)});
      }
    }
    if (out.length >= 5) { break; }
  }
  return {scroll: document.documentElement.scrollWidth, inner: width,
          culprits: out.map((o) => o.text)};
}
"""


def assert_no_horizontal_overflow(page: Page) -> None:
    """The page fits its viewport's width: nothing to scroll sideways (a phone's 360 px).

    `document.documentElement.scrollWidth <= innerWidth`; on failure the message names the
    outermost elements that stick out past the right edge."""
    found = page.evaluate(_OVERFLOWING)
    assert found["scroll"] <= found["inner"], (
        f"{page.url}: the page is {found['scroll']} px wide on a {found['inner']} px screen; "
        f"sticking out: {', '.join(found['culprits']) or '(none found by bounding box)'}"
    )


# --- Page weight and accessibility (issue 17, items 6 and 7) ---------------------------------

# axe-core from the npm registry (scripts/vendor.py puts it here, pinned by hash; `make setup`).
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
BLOCKING_IMPACTS = ("critical", "serious")


def transfer_bytes(page: Page, url: str) -> int:
    """Bytes the browser received from the network to open `url` (until the network is idle):
    every response's encoded size, compressed body plus headers, as Chromium's DevTools
    protocol reports it (`Network.loadingFinished.encodedDataLength`); an answer from the
    browser's cache counts 0. Requests a service worker makes on its own are not the page's:
    measure with `service_workers="block"` for the whole cost."""
    cdp = page.context.new_cdp_session(page)
    sizes: dict[str, int] = {}
    cdp.on(
        "Network.loadingFinished",
        lambda event: sizes.__setitem__(event["requestId"], int(event["encodedDataLength"])),
    )
    cdp.send("Network.enable")
    try:
        page.goto(url, wait_until="networkidle")
    finally:
        cdp.detach()
    return sum(sizes.values())


def clear_browser_cache(page: Page) -> None:
    """A first visit: the HTTP cache emptied (cookies, and so the session, stay)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Network.enable")
        cdp.send("Network.clearBrowserCache")
    finally:
        cdp.detach()


def axe_violations(page: Page, impacts: tuple[str, ...] = BLOCKING_IMPACTS) -> list[dict]:
    """axe-core's violations of these impacts on the page as it is now. axe is evaluated through
    the DevTools protocol (not a <script>): the page's CSP stays as strict as users get it."""
    if not AXE_JS.exists():
        pytest.fail(
            f"{AXE_JS} is missing: run `.venv/bin/python scripts/vendor.py` (`make setup` does)",
            pytrace=False,
        )
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8") + "\n;undefined")
    found = page.evaluate(
        """async () => {
          const result = await axe.run(document, {resultTypes: ["violations"]});
          return result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + ": " + n.failureSummary),
          }));
        }"""
    )
    return [v for v in found if v["impact"] in impacts]


def assert_axe_clean(page: Page) -> None:
    """No critical and no serious axe-core violation on the page."""
    bad = axe_violations(page)
    report = "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in bad
    )
    assert not bad, f"axe-core on {page.url}:\n{report}"


def assert_page_landmarks(page: Page, lang: str = "ru") -> None:
    """The page's language, one h1, a main landmark and a named menu button."""
    assert page.evaluate("() => document.documentElement.lang") == lang, page.url
    assert page.locator("h1").count() == 1, f"{page.url}: {page.locator('h1').all_inner_texts()}"
    assert page.locator("main, [role=main]").count() == 1, page.url
    toggle = page.locator("button.navbar-toggle")
    if toggle.count():
        expect(toggle).to_have_accessible_name(re.compile(r"\S"))
