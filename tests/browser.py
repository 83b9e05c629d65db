"""Driving ``dreamfusion app`` in Debian's Chromium (headless, through Debian's chromedriver):
start the app on a free port, fill the page, read it back. No browser is downloaded."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require(ok: bool, what: str) -> None:
    """Skip where ``what`` (a program or package CI installs) is missing, except in CI, where
    its absence is a failure: a check that CI skipped would pass unseen."""
    import pytest

    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing in CI: .ci/run should have installed it")
        pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``python -m dreamfusion app`` on a free port, until ``close``."""

    def __init__(self, root: Path, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dreamfusion", "app", "--port", str(self.port), "--root",
             str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env)
        self.first_line = self.proc.stdout.readline()       # "open http://..." or the error
        if "open http" not in self.first_line:
            self.close()
            raise RuntimeError(f"the app did not start: {self.first_line}")

    def close(self) -> str:
        """SIGTERM (a going run stops with its checkpoint); returns what the app printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.first_line + (out or "")


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # root in a container has no sandbox; SwiftShader gives headless Chromium its WebGL
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1300", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The app's page in one browser tab, by the element ids ``dreamfusion.app.ui`` sets."""

    def __init__(self, driver, url: str) -> None:
        self.driver, self.url = driver, url
        driver.get(url)
        self.wait_for(lambda: self.driver.find_elements("css selector", "#prompt textarea"), 60)

    def wait_for(self, condition, timeout: float, what: str = "the page"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                value = condition()
            except Exception:           # an element re-rendered under us: look again
                value = None
            if value is not None and value is not False and (
                    not hasattr(value, "__len__") or len(value)):
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                             f"status: {self.status()!r}")

    def find(self, css: str):
        return self.driver.find_element("css selector", css)

    def fill(self, css: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.find(css)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(text)

    def click(self, element_id: str) -> None:
        self.find(f"#{element_id}").click()

    def status(self, element_id: str = "status") -> str:
        try:
            return self.find(f"#{element_id} textarea").get_attribute("value") or ""
        except Exception:
            return ""

    def generate(self, prompt: str, steps: int, overrides: str = "") -> None:
        self.fill("#prompt textarea", prompt)
        self.fill("#steps input", str(steps))
        self.fill("#overrides textarea", overrides)
        self.click("generate")

    def canvas_image(self, element_id: str) -> np.ndarray:
        """The 3D viewer's canvas as the user sees it (RGB)."""
        png = self.find(f"#{element_id} canvas").screenshot_as_png
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def links(self, element_id: str) -> list[str]:
        anchors = self.driver.find_elements("css selector", f"#{element_id} a[href]")
        return sorted({a.get_attribute("href") for a in anchors})

    def open_tab(self, name: str) -> None:
        for tab in self.driver.find_elements("css selector", "button[role=tab]"):
            if tab.text.strip() == name:
                tab.click()
                return
        raise AssertionError(f"no tab {name!r}")

    def remote_requests(self) -> list[str]:
        """Every URL the page asked for since the last call that is not this machine's."""
        urls = set()
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.add(message["params"]["request"]["url"])
        local = ("http://127.0.0.1:", "data:", "blob:", "about:")
        return sorted(u for u in urls if not u.startswith(local))

    def screenshot(self, folder: str | os.PathLike | None, name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(folder) / name))


def colour_share(image: np.ndarray, rgb: tuple[float, float, float], tolerance: float = 0.25
                 ) -> float:
    """The share of ``image``'s pixels near the hue of ``rgb`` (0-1 floats): shading changes a
    colour's brightness, so pixels are compared after scaling to their brightest channel."""
    pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
    bright = pixels.max(axis=1, keepdims=True)
    lit = bright[:, 0] > 0.15
    target = np.asarray(rgb) / max(rgb)
    distance = np.abs(pixels / np.maximum(bright, 1e-6) - target).max(axis=1)
    return float(np.mean(lit & (distance < tolerance)))
