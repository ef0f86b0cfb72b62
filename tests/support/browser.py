"""A real browser for the web console's tests: Playwright for Python driving the system's Chromium.

Playwright's own browser download is not used (nor reachable from CI): the browser is Debian's
`chromium` package, which scripts/ensure-tools installs, found by `chromium_path()`. Without it the
test skips with that reason, except as root, where ensure-tools would have installed it: there a
missing browser fails the test, so CI cannot pass by skipping it.

Every wait is bounded by Playwright's timeouts (`ACTION_TIMEOUT_MS` for clicks and waits for an
element, `NAVIGATION_TIMEOUT_MS` for page loads), so a console that never answers fails the test
within seconds. Screenshots go to `ARTIFACTS_DIR/<test name>/`, kept after the run (git ignores
`tests/artifacts/`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

ACTION_TIMEOUT_MS = 5_000
NAVIGATION_TIMEOUT_MS = 10_000

ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "artifacts"
"""tests/artifacts/: screenshots and other files a test leaves for a person to look at."""

# Debian's /usr/bin/chromium is a shell wrapper around /usr/lib/chromium/chromium; either works.
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FALLBACKS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium")


def chromium_path() -> str | None:
    """The Chromium executable: `HOOKD_TEST_CHROMIUM` when set, else the first of the usual names
    on PATH, else Debian's install locations; None if there is none."""
    override = os.environ.get("HOOKD_TEST_CHROMIUM")
    if override:
        return override
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    for path in _FALLBACKS:
        if os.access(path, os.X_OK):
            return path
    return None


def require_chromium() -> str:
    """`chromium_path()`, or skip the test (not root) / fail it (root: ensure-tools installs it)."""
    path = chromium_path()
    if path is not None:
        return path
    message = (
        "chromium not found: `make test` installs it with scripts/ensure-tools "
        "(apt-get install chromium); HOOKD_TEST_CHROMIUM may name another executable"
    )
    if os.geteuid() == 0:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium (sandbox off as root, where Chromium refuses to start with it)."""
    executable = require_chromium()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=args, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Browser) -> BrowserContext:
    """A fresh browser profile (own cookies) with the bounded default timeouts."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return context


class Screenshots:
    """Numbered full-page screenshots of one test in `directory` (emptied first)."""

    def __init__(self, test_name: str) -> None:
        self.directory = ARTIFACTS_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.taken: list[Path] = []

    async def take(self, page: Page, name: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path
