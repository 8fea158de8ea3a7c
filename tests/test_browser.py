"""Seen in a real browser: the documentation site (home page and a workflow page, built strict and
served over HTTP) and a tiny run's report.html open in headless Chromium without a console error
or an image that does not load. Needs Debian's ``chromium`` (``make docs`` installs it) and
``websocket-client`` (the ``test`` extra); skipped without them. Screenshots (PNG) go to the
test's tmp dir, or to ``$KDISTILL_SCREENSHOTS`` when it is set."""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
WAIT = 15  # seconds, the most any one wait takes

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make docs installs it: apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("websocket") is None, reason="pip install -e '.[test]' (websocket-client)"),
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="pip install -e '.[docs]'"),
]

BROKEN_IMAGES = ("JSON.stringify([...document.images].filter(i => i.complete && i.naturalWidth === 0)"
                 ".map(i => i.currentSrc || i.src || i.alt))")
RUN = {"name": "browser", "latency": False, "data": {"source": "digits", "labelled": 100},
       "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
       "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
       "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}


class DevTools:
    """One page of a Chromium driven over the DevTools protocol; every wait has a deadline."""

    def __init__(self, url):
        import websocket

        self.ws = websocket.create_connection(url, timeout=WAIT, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = self.until(lambda m: m.get("id") == msg_id)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply.get("result", {})

    def until(self, wanted):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)
            if wanted(message):
                return message
        raise TimeoutError("no answer from chromium in time")

    def errors(self):
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".rstrip())
        return found

    def visit(self, url, shot: Path):
        """Load url, wait for its load event; the console errors, the images that did not load and
        the screenshot written to shot."""
        self.events.clear()
        navigated = self.call("Page.navigate", url=url)
        assert not navigated.get("errorText"), f"{url}: {navigated['errorText']}"
        self.until(lambda m: m.get("method") == "Page.loadEventFired")
        broken = json.loads(self.call("Runtime.evaluate", expression=BROKEN_IMAGES, returnByValue=True)["result"]["value"])
        shot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return self.errors(), broken

    def close(self):
        self.ws.close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def screenshots(tmp_path):
    folder = Path(os.environ.get("KDISTILL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site(tmp_path):
    """The documentation site built strict, served at the yielded URL by a thread."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    folder = tmp_path / "site"
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium on a free DevTools port (read from DevToolsActivePort), killed afterwards."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    process = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
         "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page = None
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + WAIT
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in time"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT) as answer:
            targets = json.load(answer)
        page = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        yield page
    finally:
        if page is not None:
            page.close()
        process.kill()
        process.wait(timeout=WAIT)


def test_the_site_and_a_report_in_chromium(site, browser, screenshots, tmp_path):
    from kdistill import run

    report = run(RUN, runs_dir=tmp_path / "runs", progress=False).run_dir / "report.html"
    assert report.is_file()
    pages = {"home": site + "index.html", "workflow-vision": site + "workflows/vision/",
             "report": report.as_uri()}
    problems = {}
    for name, url in pages.items():
        shot = screenshots / f"{name}.png"
        errors, broken = browser.visit(url, shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if errors or broken:
            problems[url] = {"console errors": errors, "images that did not load": broken}
    assert not problems, json.dumps(problems, indent=1)
    # and the checks see what they look for: a planted page with both faults
    planted = tmp_path / "planted.html"
    planted.write_text("<img src='missing.png' alt='missing'><script>console.error('planted')</script>")
    errors, broken = browser.visit(planted.as_uri(), screenshots / "planted.png")
    assert any("planted" in e for e in errors) and any("missing.png" in e for e in errors), errors
    assert len(broken) == 1 and broken[0].endswith("missing.png"), broken
