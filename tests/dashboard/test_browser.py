"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against a
running server (the ``bridge`` fixture: SIP + HTTP on 127.0.0.1) with real calls from a
raw SIP client and an agent that sends a transcript.

One browser per test, a few seconds each. ``SIPBRIDGE_DASHBOARD_SCREENSHOTS=DIR`` saves a
screenshot of each page there (docs/dashboard.md's pictures come from such a run).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from tests.runtime.test_agent_link import add_agent, caller_hangs_up, live_call
from tests.runtime.test_call import NUMBER, UdpClient, answer_bye, records
from tests.support.agents import AgentCall, ScriptedAgent
from tests.support.require import CHROMIUM
from tests.support.settings import BridgeFactory

pytestmark = pytest.mark.requires("chromium", "playwright")

MUTED = "+12025550102"  # routed to an agent that is not voice-enabled
SCREENSHOTS = os.environ.get("SIPBRIDGE_DASHBOARD_SCREENSHOTS")
TIMEOUT_MS = 5000


@asynccontextmanager
async def chromium(**context: Any) -> AsyncIterator[Any]:
    """A new page in a fresh headless Chromium (closed afterwards)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await (await browser.new_context(**context)).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    if SCREENSHOTS:  # Playwright makes the folder
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def base_url(server: SipBridgeServer) -> str:
    host, port = server.http_address[:2]
    return f"http://{host}:{port}"


async def sign_in(page: Any, base: str, key: str) -> None:
    await page.goto(f"{base}/calls")  # not signed in: sent to the sign-in page
    assert "/login?next=/calls" in page.url
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/calls")


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> SipBridgeServer:
    """A server whose overload guard ignores the browser: Chromium's pages and Playwright's
    driver share this test's loop and CPU, which is no reason to refuse the test's calls."""
    return await make_bridge(overload_lag_ms=10_000, overload_cpu=1.0)


async def test_real_calls_live_hang_up_conversations_call_and_metrics(
    bridge: SipBridgeServer,
) -> None:
    _record, key = await service.create_api_key(bridge.db, "admin")

    async def script(ws: ServerConnection, call: AgentCall) -> None:
        for role, text in (("agent", "Hello, how can I help?"), ("caller", "My balance, please")):
            await ws.send(json.dumps({"type": "transcript", "role": role, "text": text}))

    async with (
        ScriptedAgent(script) as agent,
        chromium(viewport={"width": 1280, "height": 900}) as page,
    ):
        await add_agent(bridge, [agent.url])  # agent "bot" answers NUMBER
        await service.add_agent(bridge.db, "muted", agent.url, voice_enabled=False)
        await service.add_number(bridge.db, MUTED, "muted")
        base = base_url(bridge)
        problems: list[str] = []  # script errors and Content-Security-Policy refusals
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        dialogs: list[str] = []

        async def confirm(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", confirm)
        await sign_in(page, base, key)

        # Live calls: a call appears by itself (server-sent events), then is hung up here.
        await page.get_by_role("link", name="Live calls").click()
        await page.wait_for_url(f"{base}/live")
        await page.get_by_text("No calls in progress.").wait_for()
        async with live_call(bridge, "dash-live") as call:
            row = page.locator("#live-rows tr[data-call]", has_text="active")
            await row.wait_for()  # ringing first, then active: the row changes in place
            assert "+15005550006" in await row.inner_text()
            await shot(page, "live")
            await row.get_by_role("button", name="Hang up").click()
            bye = await answer_bye(call.client)
            assert bye.method == "BYE"
            assert dialogs == ["Hang up the call from +15005550006?"]  # asked first
            await page.get_by_text("No calls in progress.").wait_for()
        # A call the caller ends after the agent's transcript, and one that fails.
        async with live_call(bridge, "dash-talk") as call:
            await asyncio.sleep(0.5)
            await caller_hangs_up(call)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(
                client.invite("z9hG4bK-dash-muted", "dash-muted", 4000).replace(
                    NUMBER.encode(), MUTED.encode()
                )
            )
            assert (await client.final()).status == 480
        finally:
            client.close()
        done = await records(bridge, 3)
        reasons = {record.sip_call_id: record.reason for record in done}
        assert reasons == {
            "dash-live": "operator_hangup",
            "dash-talk": "caller_hangup",
            "dash-muted": "agent_not_voice_enabled",
        }

        # Conversations: filter by a number typed without "+".
        await page.get_by_role("link", name="Conversations").click()
        await page.wait_for_url(f"{base}/calls")
        rows = page.locator("table.calls tbody tr")
        assert await rows.count() == 3
        await page.get_by_label("Phone number").fill("12025550102")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_url("**/calls?number=12025550102**")
        await page.wait_for_function(
            "document.querySelectorAll('table.calls tbody tr').length === 1"
        )
        assert "not voice-enabled" in await rows.first.inner_text()
        await shot(page, "conversations-filtered")
        await rows.first.get_by_role("link").click()
        await page.get_by_text("enable it on the Agents page").wait_for()
        await shot(page, "call-failed")

        # The answered call: its transcript as a conversation and its timeline.
        await page.goto(f"{base}/calls?number=12025550101")
        assert await rows.count() == 2
        await shot(page, "conversations")
        await rows.first.get_by_role("link").click()  # newest first: the caller's hang-up
        transcript = page.locator("ol.transcript li")
        await transcript.first.wait_for()
        turns = [await item.inner_text() for item in await transcript.all()]
        assert "Agent" in turns[0] and "Hello, how can I help?" in turns[0]
        assert "Caller" in turns[1] and "My balance, please" in turns[1]
        timeline = await page.locator("ol.timeline").inner_text()
        for step in ("received", "ringing", "agent connected", "answered", "hung up by caller"):
            assert step in timeline, step
        assert "dash-talk" in await page.locator("dl.facts").first.inner_text()  # SIP Call-ID
        await shot(page, "call")

        # Metrics: the totals and the charts of these three calls.
        await page.goto(f"{base}/stats?range=24h")
        assert await page.locator("#total-calls").inner_text() == "3"
        assert await page.locator("#answered-calls").inner_text() == "2"
        assert await page.locator("#success-rate").inner_text() == "66.7 %"
        charts = page.locator("svg.chart")
        assert await charts.count() >= 4
        box = await charts.first.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80
        reasons_chart = page.locator("#h-reasons + .chart-and-table svg title").nth(1)
        assert await reasons_chart.text_content() == "agent_not_voice_enabled: 1 calls"
        await shot(page, "metrics")
        assert problems == []


async def test_forms_keyboard_phone_width_and_dark_mode(bridge: SipBridgeServer) -> None:
    _record, key = await service.create_api_key(bridge.db, "admin")
    base = base_url(bridge)
    phone = {"viewport": {"width": 375, "height": 812}, "color_scheme": "dark"}
    async with chromium(**phone) as page:
        # Keyboard only: the key field has the focus, Enter signs in.
        await page.goto(f"{base}/login")
        await page.keyboard.type(key)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/calls")
        # The first Tab reaches the skip link; dark colours follow the system setting.
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent")
        assert focused == "Skip to content"
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 23, 27)"
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width} px wide at 375 px"
        await shot(page, "phone-conversations")

        # An agent through the form: the API's validation error next to its field.
        await page.goto(f"{base}/agents")
        await page.get_by_label("Name", exact=True).fill("support")
        await page.get_by_label("WebSocket URL(s)").fill("http://127.0.0.1:9/agent")
        await page.get_by_role("button", name="Create agent").click()
        error = page.locator("#f-urls-error")
        await error.wait_for()
        assert "must start with ws:// or wss://" in await error.inner_text()
        assert await page.get_by_label("WebSocket URL(s)").get_attribute("aria-invalid") == "true"
        # The keyboard goes to the field to fix once htmx settles the swap (20 ms after
        # the error shows): wait for it rather than read it at once.
        await page.wait_for_function(
            "document.activeElement && document.activeElement.id === 'f-urls'", timeout=5000
        )
        assert await page.get_by_label("Name", exact=True).input_value() == "support"
        await shot(page, "phone-agent-error")
        await page.get_by_label("WebSocket URL(s)").fill("ws://127.0.0.1:9/agent")
        await page.get_by_role("button", name="Create agent").click()
        await page.locator("table.cards tbody").get_by_text("support").wait_for()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the agents page is {width} px wide at 375 px"

        # A number through the form, typed as a person would.
        await page.goto(f"{base}/numbers")
        await page.get_by_label("Phone number").fill("+1 (202) 555-0101")
        await page.get_by_label("Agent", exact=True).select_option("support")
        await page.get_by_role("button", name="Add number").click()
        await page.locator('td[data-label="Number"]', has_text="+12025550101").wait_for()
        await shot(page, "phone-numbers")
    assert [(n.number, n.agent) for n in await service.list_numbers(bridge.db)] == [
        ("+12025550101", "support")
    ]
