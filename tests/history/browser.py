"""A small headless-Chromium driver for tests, speaking the DevTools protocol directly.

``Browser`` starts ``chromium --headless=new`` with a throwaway profile and a DevTools port
the OS picks, reads the ``DevTools listening on ws://...`` line from its stderr, and talks
CDP over one websocket (flattened sessions). ``Page`` is one tab: it records what the page
did (console errors, exceptions, log entries, network requests, dialogs) from the moment it
opened, so a test can assert on them afterwards.

Invariants: no threads (every read happens in the caller, with a deadline); a dialog is
accepted as soon as it opens (else the page would hang) and kept in ``Page.dialogs``;
``Browser.close`` always ends the process group it started and removes the profile.

Use the ``browser`` fixture of a conftest (see ``find_chromium`` / ``browser_or_skip``)::

    with Browser.start() as browser:
        page = browser.new_page()
        page.goto(path.as_uri())
        assert page.evaluate("document.title") == "..."
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(RuntimeError):
    """A DevTools command answered with an error, or no answer came in time."""


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first known name on ``PATH``."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def chromium_or_skip() -> str:
    """The Chromium binary; without one, skip the test, or fail it when ``$CI`` is set."""
    binary = find_chromium()
    if binary is not None:
        return binary
    reason = (
        "no Chromium binary found (looked for $CHROMIUM and "
        f"{', '.join(CHROMIUM_NAMES)} on PATH); install it with `apt-get install -y chromium`"
    )
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class _Connection:
    """The browser's websocket: commands get ids, events are handed to their session."""

    ws: websocket.WebSocket
    pages: dict[str, Page] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer, dispatching events meanwhile."""
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = self.receive(deadline, method)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next message (events are dispatched on the way); CDPError past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CDPError(f"no answer to {waiting_for} in time")
        self.ws.settimeout(remaining)
        try:
            message: dict[str, Any] = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException as exc:
            raise CDPError(f"no answer to {waiting_for} in time") from exc
        if "method" in message:
            page = self.pages.get(message.get("sessionId", ""))
            if page is not None:
                page.on_event(message["method"], message.get("params", {}))
        return message


@dataclass
class Page:
    """One tab, attached through a flattened CDP session; it records what happens in it."""

    conn: _Connection
    session: str
    target: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dialogs: list[dict[str, Any]] = field(default_factory=list)

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Send a command to this page's session and return its result."""
        return self.conn.send(method, params, session=self.session, timeout=timeout)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        """Record an event; accept a dialog at once so the page does not block on it."""
        self.events.append((method, params))
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(params)
            message = {
                "id": 0,
                "method": "Page.handleJavaScriptDialog",
                "params": {"accept": True},
                "sessionId": self.session,
            }
            self.conn.ws.send(json.dumps(message))

    def enable(self, width: int, height: int) -> None:
        """Turn on the domains whose events the page records; set the viewport size."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def goto(self, url: str, timeout: float = 20.0) -> None:
        """Navigate to ``url`` and wait until its load event fired."""
        seen = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", since=seen, timeout=timeout)

    def wait_event(self, method: str, since: int = 0, timeout: float = 20.0) -> dict[str, Any]:
        """The first ``method`` event recorded after index ``since``, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for name, params in self.events[since:]:
                if name == method:
                    return params
            self.conn.receive(deadline, method)

    def evaluate(self, expression: str, timeout: float = 20.0) -> Any:
        """The value of a JavaScript expression (promises awaited); CDPError if it threw."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value (CDPError on time out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise CDPError(f"{expression!r} still falsy after {timeout} s")

    def errors(self) -> list[str]:
        """Uncaught exceptions, ``console.error``/``assert`` calls and error log entries."""
        out = []
        for method, params in self.events:
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"log: {params['entry']}")
        return out

    def requests(self) -> list[str]:
        """The URL of every request the page sent (Network.requestWillBeSent)."""
        return [p["request"]["url"] for m, p in self.events if m == "Network.requestWillBeSent"]

    def screenshot(
        self, path: str | Path | None = None, *, full_page: bool = True, scale: float = 1.0
    ) -> bytes:
        """A PNG of the page (or of the viewport), scaled by ``scale``, saved if asked."""
        params: dict[str, Any] = {"format": "png"}
        size = self.send("Page.getLayoutMetrics")["cssVisualViewport"]
        width, height = size["clientWidth"], size["clientHeight"]
        if full_page:
            content = self.send("Page.getLayoutMetrics")["cssContentSize"]
            width, height = content["width"], content["height"]
            params["captureBeyondViewport"] = True
        params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}
        png = base64.b64decode(self.send("Page.captureScreenshot", params, timeout=30)["data"])
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(png)
        return png


@dataclass
class Browser:
    """A headless Chromium process and its DevTools connection; use it as a context manager."""

    process: subprocess.Popen[bytes]
    profile: Path
    conn: _Connection

    @classmethod
    @contextlib.contextmanager
    def start(cls, binary: str | None = None, timeout: float = 20.0) -> Iterator[Browser]:
        """Start Chromium, yield the connected browser, and always close it afterwards."""
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no Chromium binary found")
        profile = Path(tempfile.mkdtemp(prefix="aw-chromium-"))
        stderr_path = profile / "stderr.log"
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile / 'data'}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        browser: Browser | None = None
        try:
            url = _devtools_url(process, stderr_path, timeout)
            ws = websocket.create_connection(
                url, timeout=timeout, suppress_origin=True, enable_multithread=False
            )
            browser = cls(process, profile, _Connection(ws))
            yield browser
        finally:
            _stop(process, browser)
            shutil.rmtree(profile, ignore_errors=True)

    def new_page(self, width: int = 1440, height: int = 900) -> Page:
        """Open a blank tab, attach to it and start recording its events."""
        target = self.conn.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.conn.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self.conn, session, target)
        self.conn.pages[session] = page
        page.enable(width, height)
        return page


def _devtools_url(process: subprocess.Popen[bytes], stderr_path: Path, timeout: float) -> str:
    """Wait for the ``DevTools listening on`` line Chromium writes to stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stderr_path.read_text(errors="replace")
        found = _LISTENING.search(text)
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.02)
    raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s")


def _stop(process: subprocess.Popen[bytes], browser: Browser | None) -> None:
    """Ask the browser to close, then make sure its whole process group is gone."""
    if browser is not None:
        with contextlib.suppress(Exception):
            browser.conn.send("Browser.close", timeout=5)
        with contextlib.suppress(Exception):
            browser.conn.ws.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # helpers left behind by the browser, if any


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def png_colours(png: bytes, step: int = 7) -> int:
    """How many distinct colours a sample of the PNG's pixels has (8-bit RGB/RGBA only)."""
    width, height = png_size(png)
    depth, colour_type = png[24], png[25]
    if depth != 8 or colour_type not in (2, 6):
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}")
    channels = 3 if colour_type == 2 else 4
    rows = _unfilter(zlib.decompress(_idat(png)), width * channels, height, channels)
    seen = set()
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width * channels, channels * step):
            seen.add(bytes(row[x : x + channels]))
    return len(seen)


def _idat(png: bytes) -> bytes:
    out, pos = [], 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IDAT":
            out.append(png[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(out)


def _unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytearray]:
    """Undo PNG's per-scanline filters (None, Sub, Up, Average, Paeth)."""
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + _predict(kind, left, up, corner)) & 0xFF
        rows.append(line)
        prev = line
    return rows


def _predict(kind: int, left: int, up: int, corner: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return left
    if kind == 2:
        return up
    if kind == 3:
        return (left + up) // 2
    p = left + up - corner
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
    return left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
