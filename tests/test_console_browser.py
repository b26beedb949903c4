"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

An admin logs in, watches the numbers of 50 requests appear without reloading, filters the
request explorer to one model, opens a request, creates a key (shown once) that then works,
revokes it and sees it refused, and reads the pipeline; no page shows a key or a provider secret,
and no script error or Content-Security-Policy violation happens on the way. A screenshot of
each page is saved: in ``$TEST_ARTIFACTS_DIR/console`` when set (CI keeps that folder),
else in the test's temporary directory.

The browser is ``$CHROMIUM_PATH`` or ``/usr/bin/chromium`` (``.ci/run`` installs Debian's
package); Playwright never downloads one. Without it the test is skipped, and fails under CI=true.
"""
from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture says why the test cannot run
    expect = None

from accounting_support import RAW_SECRETS, UPSTREAM_KEY, bearer, captured_logs  # noqa: F401  (captured_logs: autouse)
from console_support import ADMIN, ALICE, PIPELINE, chat, console_config, send
from hookgate.server import create_app

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
WAIT_MS = 20_000


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the console's browser tests need chromium and playwright: {reason}")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing(f"no browser at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        _missing("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    root = os.environ.get("TEST_ARTIFACTS_DIR")
    folder = Path(root) / "console" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_an_admin_uses_every_page_of_the_dashboard(aiohttp_client, make_config, browser, screenshots, tmp_path,
                                                         redis_url, redis_prefix, emulator):
    config = console_config(
        {"url": f"sqlite:///{tmp_path / 'requests.db'}"},
        redis={"redis": True, "redis_url": redis_url, "key_prefix": redis_prefix},
        pipeline=[*PIPELINE, "openai"],
        openai={"base_url": emulator.base_url, "api_key": UPSTREAM_KEY, "models": ["gpt-4o-mini"]},
    )
    config += '[models."gpt-4o"]\ndeployments = [{ name = "org-a", provider = "openai", model = "gpt-4o-mini", requests_per_minute = 500 }]\n'
    client = await aiohttp_client(create_app(make_config(config)))
    base = str(client.make_url("/-/dashboard"))
    context = await browser.new_context(viewport=LAPTOP)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Script errors and CSP violations ("Refused to …") count; the browser's note of an answered
    # 401/403 (the login page itself, the refused non-admin login) is what the test asks for.
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    seen_text: list[str] = []

    async def shot(name: str) -> None:
        seen_text.append(await page.content())
        await page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)

    # --- login: the page refuses anyone without a session, the form trades the key for one
    answer = await page.goto(base)
    assert answer is not None and answer.status == 401
    await page.get_by_test_id("login-key").wait_for()
    await shot("login")
    await page.get_by_test_id("login-key").fill(ALICE)
    await page.get_by_test_id("login-submit").click()
    await page.get_by_text("That key is not an admin key.").wait_for(timeout=WAIT_MS)
    await page.get_by_test_id("login-key").fill(ADMIN)
    await page.get_by_test_id("login-submit").click()
    await page.get_by_test_id("tile-requests").wait_for(timeout=WAIT_MS)
    cookie = next(c for c in await context.cookies() if c["name"] == "hookgate_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ADMIN not in cookie["value"]
    assert await page.evaluate("document.cookie") == "", "no script can read the session"

    # --- overview: 50 requests sent now appear without a reload
    assert await send(client, 30, key=ALICE, model="echo") == [200] * 30
    assert await send(client, 20, key=ADMIN, model="echo-large") == [200] * 20
    tile = page.get_by_test_id("tile-requests").locator(".value")
    await expect(tile).to_have_text("50", timeout=WAIT_MS)  # live: polled, no reload
    assert await page.get_by_test_id("tile-error-rate").locator(".value").text_content() == "0.0%"
    assert (await page.get_by_test_id("tile-cost").locator(".value").text_content()).startswith("$")
    models = page.get_by_test_id("top-models")
    await models.get_by_text("echo-large").wait_for()
    assert "30" in await models.text_content() and "20" in await models.text_content()
    assert "alice" in await page.get_by_test_id("top-keys").text_content()
    await shot("overview")

    # --- request explorer: filter to one model, open a request
    await page.get_by_role("link", name="Requests").click()
    await page.get_by_test_id("request-row").first.wait_for(timeout=WAIT_MS)
    await page.get_by_test_id("filter-model").fill("echo-large")
    await page.get_by_test_id("filter-apply").click()
    await page.wait_for_url(re.compile(r"model=echo-large"))
    rows = page.get_by_test_id("request-row")
    await expect(rows).to_have_count(20, timeout=WAIT_MS)
    for i in range(await rows.count()):
        assert await rows.nth(i).locator("td").nth(2).text_content() == "echo-large"
    await shot("requests")
    opened = await rows.first.get_attribute("data-id")
    await rows.first.click()
    await page.get_by_test_id("phase-timeline").locator("svg rect").first.wait_for(timeout=WAIT_MS)
    assert await page.get_by_test_id("request-id").text_content() == f"Request {opened}"
    assert "call_provider" in await page.get_by_test_id("phase-timeline").text_content()
    assert "ok" in await page.get_by_test_id("attempts").text_content()
    assert "echo-large" in await page.get_by_test_id("request-summary").text_content()
    assert "$0.000" in await page.get_by_test_id("request-cost").text_content()
    await shot("request")

    # --- keys: create one (shown once), use it, revoke it, see it refused
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_test_id("key-row").first.wait_for(timeout=WAIT_MS)
    await page.get_by_test_id("key-id").fill("browser-bot")
    await page.get_by_test_id("key-models").fill("echo")
    await page.get_by_test_id("key-daily").fill("1.5")
    await page.get_by_test_id("key-create").click()
    await page.get_by_test_id("new-key").wait_for(timeout=WAIT_MS)
    raw = await page.get_by_test_id("new-key").text_content()
    RAW_SECRETS.append(raw)
    assert raw.startswith("hg-")
    await page.get_by_test_id("new-key-done").click()
    await page.get_by_test_id("new-key-dialog").wait_for(state="detached")
    assert raw not in await page.content(), "the key is gone from the page once its dialog closes"
    row = page.locator("[data-testid=key-row][data-id=browser-bot]")
    await row.wait_for(timeout=WAIT_MS)
    assert "$1.5" in await row.text_content()
    await shot("keys")
    used = await client.post("/v1/chat/completions", json=chat("echo"), headers=bearer(raw))
    assert used.status == 200
    assert (await client.post("/v1/chat/completions", json=chat("echo-large"), headers=bearer(raw))).status == 403
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_test_id("revoke-browser-bot").click()
    await row.wait_for(state="detached", timeout=WAIT_MS)
    assert (await client.post("/v1/chat/completions", json=chat("echo"), headers=bearer(raw))).status == 401

    # --- pipeline: order, rules and the effective config, secrets masked
    await page.get_by_role("link", name="Pipeline").click()
    await page.get_by_test_id("pipeline-order").wait_for(timeout=WAIT_MS)
    order = await page.get_by_test_id("pipeline-order").text_content()
    assert order.index("request_store") < order.index("api_keys") < order.index("openai")
    await page.get_by_test_id("pipeline-config").locator("summary", has_text="openai").click()
    assert "**********" in await page.get_by_test_id("pipeline-config").text_content()
    route = await page.get_by_test_id("route-gpt-4o").text_content()
    assert "gpt-4o: weighted (local)" in route and "org-a" in route and "openai/gpt-4o-mini" in route and "500 rpm" in route
    await shot("pipeline")

    # --- nothing of a key or a provider secret in any page; no script error, no CSP violation
    for text in seen_text:
        for secret in (ADMIN, ALICE, UPSTREAM_KEY, raw):
            assert secret not in text
    assert problems == []
    assert sorted(p.name for p in screenshots.iterdir()) == ["keys.png", "login.png", "overview.png", "pipeline.png", "request.png", "requests.png"]

    # --- log out: the pages refuse the browser again
    await page.get_by_role("button", name="Log out").click()
    await page.get_by_test_id("login-key").wait_for(timeout=WAIT_MS)
    again = await page.goto(base + "/keys")
    assert again is not None and again.status == 401
    await context.close()
