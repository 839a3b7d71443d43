"""Headless Chromium for the tests, driven over the DevTools protocol (websocket-client, no driver).

Why this and not a screenshot: the test asks the page itself whether every image decoded
(``img.complete && img.naturalWidth > 0``) and what the verdict element says, which a picture
cannot tell. Chromium comes from Debian's packages: installed here when missing (as root, with
apt-get), and the caller skips with the reason when that is impossible.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from processes import stop_group

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_or_install_chromium() -> tuple[str | None, str]:
    """(path of a Chromium binary, or None; why not)."""
    for name in BINARIES:
        if shutil.which(name):
            return shutil.which(name), ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "Chromium is missing and apt-get cannot install it here (not root, or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return None, f"apt-get install chromium failed: {done.stderr.strip().splitlines()[-1:]}"
    return shutil.which("chromium"), ""


class Page:
    """One tab, spoken to over its DevTools websocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {timeout:.0f} s")
            time.sleep(0.1)


@contextmanager
def headless_chromium(binary: str, timeout: float = 60.0) -> Iterator[Page]:
    """A headless Chromium with no network use beyond its own loopback DevTools port."""
    # Chromium's helper processes may still write into the profile as the browser exits: the whole
    # process group is stopped, and a file written after that does not fail the test's teardown
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-extensions", "--disable-background-networking",
                                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} did not open its DevTools port (exit status {proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                targets = json.loads(answer.read())
            page = Page(next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"))
            try:
                yield page
            finally:
                page.ws.close()
        finally:
            stop_group(proc)
