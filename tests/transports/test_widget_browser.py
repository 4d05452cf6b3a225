"""The browser widget in a real headless Chromium, against the real call server.

Chromium's fake microphone plays a WAV file in a loop (a tone burst, then silence), so
every loop is one utterance for the energy VAD; the scripted STT hears the next line for
each. The page captures it through its AudioWorklet, speaks the generic protocol on
``/ws``, plays the bot's audio and echoes its marks: everything a person's browser does.
Set ``WIDGET_SCREENSHOT=/some/file.png`` to keep a screenshot of the page mid-call (and
``WIDGET_FLOW_SCREENSHOT`` for the flow bot's call, its graph beside the transcript).
"""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from runtime.transports.server import CallServer
from tests.voice_fakes import tone

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000
GREETING = "Hello, this is the test line."
QUESTION = "what are your hours"
ANSWER = "We are open nine to five."
# enough harmless lines that the bot never hears "goodbye" (and hangs up) on its own
LINES = [QUESTION, *(["uh huh"] * 12)]

# Records what the page sends on its WebSocket (JSON messages and binary frame sizes).
SPY_ON_SOCKET = """
(() => {
  const sent = (window.__sent = { json: [], frames: 0, sizes: {} });
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string") {
      sent.json.push(JSON.parse(data));
    } else {
      const size = data.byteLength ?? data.size;
      sent.frames += 1;
      sent.sizes[size] = (sent.sizes[size] || 0) + 1;
    }
    return send.call(this, data);
  };
})();
"""

PAGE_ERRORS: dict[Page, list[str]] = {}  # script exceptions and failed requests, per page

READ_TRANSCRIPT = """els => els.map(li => ({
  role: li.dataset.role,
  text: li.querySelector('.text').textContent,
  interrupted: li.dataset.interrupted === 'true',
}))"""


def write_microphone(path: Path) -> Path:
    """2 s of silence then 0.8 s of tone, 16 kHz mono 16-bit: one utterance per loop.
    Silence first, so that the caller first speaks after the greeting (~1 s of audio)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * int(2.0 * 16000) + tone(0.8, 16000, 440.0))
    return path


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium profile whose microphone is the WAV above."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the widget's browser test needs it")
    microphone = write_microphone(tmp_path / "microphone.wav")
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with async_playwright() as playwright:
        # headless=False: the --headless=new above decides, and playwright adds no
        # --mute-audio of its own
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=False,
            args=args,
            viewport={"width": 1280, "height": 800},
        )
        try:
            await context.add_init_script(SPY_ON_SOCKET)
            yield context
        finally:
            await context.close()


async def open_widget(context: BrowserContext, server: CallServer, bot: str) -> Page:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # every request the page makes is answered (no /favicon.ico 404 in the server's log)
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    PAGE_ERRORS[page] = errors
    await page.goto(server.url + "/")
    await page.wait_for_selector(f"#bot option[value='{bot}']", state="attached")
    await page.select_option("#bot", bot)
    return page


async def page_state(page: Page) -> dict[str, Any]:
    return {
        "status": await page.text_content("#status"),
        "errors": await page.text_content("#errors"),
        "transcript": await transcript(page),
        "timeline": await page.eval_on_selector_all(
            "#timeline li", "els => els.map(li => li.textContent)"
        ),
    }


async def transcript(page: Page) -> list[dict[str, Any]]:
    return await page.eval_on_selector_all("#transcript li", READ_TRANSCRIPT)


async def wait_for(page: Page, condition: str, what: str, arg: Any = None) -> None:
    """Wait for a JS condition on the page; on timeout, fail with what the page shows."""
    try:
        await page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
    except Exception as exc:
        state = await page_state(page)
        raise AssertionError(f"the page never showed {what}: {state}") from exc


async def close(page: Page) -> None:
    await page.close()
    assert PAGE_ERRORS.pop(page) == [], "the widget threw or a request failed"


async def wait_for_record(server: CallServer) -> None:
    for _ in range(200):
        if server.records:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server kept no record of the call")


async def test_a_call_from_the_browser(
    fake_bot: Callable[..., Path], serve: Callable[..., Any], browser: BrowserContext
) -> None:
    server: CallServer = await serve(fake_bot(LINES))
    page = await open_widget(browser, server, "line")
    bots = await page.evaluate("fetch('/api/bots').then(r => r.json())")
    version = bots["bots"][0]["version"]
    assert version in await page.text_content("#bot-info")

    await page.click("#call")
    await wait_for(
        page,
        """([greeting, question, answer]) => {
          const lines = [...document.querySelectorAll('#transcript li')].map(
            li => li.dataset.role + ': ' + li.querySelector('.text').textContent);
          return lines.includes('bot: ' + greeting) && lines.includes('customer: ' + question)
            && lines.includes('bot: ' + answer);
        }""",
        "the greeting, the question and the answer",
        [GREETING, QUESTION, ANSWER],
    )
    said = [(line["role"], line["text"]) for line in await transcript(page)]
    assert [text for role, text in said if role == "bot"][:2] == [GREETING, ANSWER]
    assert next(text for role, text in said if role == "customer") == QUESTION
    assert said.index(("customer", QUESTION)) < said.index(("bot", ANSWER))
    assert await page.locator("#timeline li[data-type='turn']").count() >= 1
    assert await page.is_hidden("#flow-panel")  # no flow, no graph
    status = await page.text_content("#status")
    session_id = await page.get_attribute("#status", "data-session")
    assert session_id and session_id in status and version in status
    assert await page.get_attribute("#status", "data-state") == "in-call"
    if shot := os.environ.get("WIDGET_SCREENSHOT"):
        await page.screenshot(path=shot, full_page=True)

    await page.click("#hangup")
    await wait_for(
        page, "document.querySelector('#status').dataset.state === 'ended'", "the call ended"
    )
    assert "disconnected by customer" in await page.text_content("#status")
    assert await page.is_enabled("#call") and not await page.is_enabled("#hangup")
    await wait_for_record(server)

    record = server.records[-1]
    assert record.transport == "websocket"
    assert record.disconnected_by == "customer"
    assert record.session_id == session_id
    assert [e.model_dump(include={"role", "text", "interrupted"}) for e in record.transcript] == (
        await transcript(page)
    )
    sent = await page.evaluate("window.__sent")
    start = sent["json"][0]
    assert start == {
        "type": "start",
        "bot": "line",
        "variables": {},
        "sample_rate": 16000,
        "marks": True,
    }
    assert sent["json"][-1] == {"type": "stop"}
    assert any(message["type"] == "mark" for message in sent["json"])  # playout confirmed
    assert set(sent["sizes"]) == {"640"}  # 20 ms frames of 16 kHz 16-bit PCM
    assert sent["frames"] > 100
    await close(page)


async def test_the_page_shows_why_a_call_was_refused(
    fake_bot: Callable[..., Path], serve: Callable[..., Any], browser: BrowserContext
) -> None:
    server: CallServer = await serve(fake_bot(LINES), max_concurrent_calls=0)
    page = await open_widget(browser, server, "line")
    await page.click("#call")
    await wait_for(
        page, "document.querySelector('#status').dataset.state === 'failed'", "a refusal"
    )
    assert "at capacity (0/0 calls)" in await page.text_content("#errors")
    assert "at capacity" in await page.text_content("#status")
    assert await page.is_enabled("#call")
    await wait_for_record(server)
    assert server.records[-1].disconnected_by == "rejected"
    # the page names its icon inline: a (headed) browser asks the server for none, so a
    # server's log has no /favicon.ico 404 per visit
    icon = await page.get_attribute("link[rel='icon']", "href")
    assert icon is not None and icon.startswith("data:")
    await close(page)


async def test_a_required_variable_left_empty(
    fake_bot: Callable[..., Path], serve: Callable[..., Any], browser: BrowserContext
) -> None:
    bots = fake_bot(LINES)
    with (bots / "line.toml").open("a", encoding="utf-8") as toml:
        toml.write('[variables]\nclinic = "Test Clinic"\ncustomer_id = { required = true }\n')
    server: CallServer = await serve(bots)
    page = await open_widget(browser, server, "line")
    assert await page.input_value("#var-clinic") == "Test Clinic"
    assert await page.get_attribute("#var-customer_id", "aria-required") == "true"
    assert "required" in await page.text_content("label[for='var-customer_id']")

    await page.click("#call")
    await wait_for(
        page, "document.querySelector('#status').dataset.state === 'failed'", "a refusal"
    )
    assert "customer_id" in await page.text_content("#errors")
    await wait_for_record(server)
    record = server.records[-1]
    assert record.disconnected_by == "error"
    assert record.variables == {"clinic": "Test Clinic"}
    await close(page)


READ_GRAPH = """root => ({
  current: root.dataset.current,
  path: root.dataset.path,
  steps: [...root.querySelectorAll('.flow-node.step')].map(n => n.dataset.step),
  tools: [...root.querySelectorAll('.flow-node.tool')].map(n => n.dataset.node),
  start: [...root.querySelectorAll('.flow-node.start')].map(n => n.dataset.node),
  highlighted: [...root.querySelectorAll('.flow-node.current')].map(n => n.dataset.node),
  visited: [...root.querySelectorAll('.flow-node.visited')].map(n => n.dataset.node),
  taken: [...root.querySelectorAll('.flow-edge.taken')].map(e => e.dataset.key),
  edges: root.querySelectorAll('.flow-edge path').length,
})"""


async def test_a_flow_bot_shows_its_graph_and_the_step_it_is_in(
    dentist_bot: Callable[[list[str]], Path], serve: Callable[..., Any], browser: BrowserContext
) -> None:
    """The dentist bot (offline `rules` LLM): "I'd like to book a cleaning" moves the call
    from `triage` to `booking`, capturing the service; the page draws the flow as SVG
    beside the transcript and moves the highlight as the `step_entered` event arrives."""
    server: CallServer = await serve(dentist_bot(["I'd like to book a cleaning", *LINES[1:]]))
    page = await open_widget(browser, server, "dentist")
    assert await page.is_hidden("#flow-panel")

    await page.click("#call")
    await wait_for(
        page,
        "document.querySelector('#flow-graph').dataset.current === 'triage'",
        "the graph, in step triage",
    )
    assert await page.is_visible("#flow-panel")
    graph = await page.eval_on_selector("#flow-graph", READ_GRAPH)
    assert graph["steps"] == [
        "triage",
        "booking",
        "confirmation",
        "wrap_up",
        "emergency",
        "take_message",
        "message_taken",
    ]
    assert graph["tools"] == ["tool:end_call", "tool:transfer_call"]
    assert graph["start"] == ["triage"] and graph["highlighted"] == ["triage"]
    assert graph["edges"] == 11 and graph["taken"] == []
    assert await page.text_content("#flow-current") == "Current step: triage"
    assert await page.get_attribute("#flow-graph svg", "role") == "img"

    await wait_for(
        page,
        "document.querySelector('#flow-graph').dataset.current === 'booking'",
        "the step change to booking",
    )
    graph = await page.eval_on_selector("#flow-graph", READ_GRAPH)
    assert graph["highlighted"] == ["booking"] and graph["visited"] == ["triage"]
    assert graph["path"] == "triage booking"
    assert graph["taken"] == ["steps.triage.next[1]"]
    assert await page.text_content("#flow-current") == "Current step: booking"
    last = await page.text_content("#flow-last")
    assert last and last.startswith("triage → booking: chosen: the caller wants to book")
    await wait_for(
        page,
        "document.querySelector('#captured [data-name=service] dd')?.textContent === 'cleaning'",
        "the captured service",
    )
    said = [(line["role"], line["text"]) for line in await transcript(page)]
    assert ("customer", "I'd like to book a cleaning") in said
    assert await page.locator("#timeline li[data-type='step_entered']").count() == 1
    # the graph sits beside the transcript, not below it
    panel = await page.locator("#flow-panel").bounding_box()
    words = await page.locator("#transcript").bounding_box()
    assert panel and words and panel["x"] > words["x"] and panel["y"] < words["y"] + words["height"]
    if shot := os.environ.get("WIDGET_FLOW_SCREENSHOT"):
        await page.screenshot(path=shot, full_page=True)

    await page.click("#hangup")
    await wait_for(
        page, "document.querySelector('#status').dataset.state === 'ended'", "the call ended"
    )
    await wait_for_record(server)
    record = server.records[-1]
    assert record.steps == ["triage", "booking"]
    assert record.captured == {"service": "cleaning"}
    await close(page)


NO_MICROPHONE = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Requested device not found", "NotFoundError"));
"""


async def test_a_caller_without_a_microphone_types_to_the_bot(
    fake_bot: Callable[..., Path], serve: Callable[..., Any], browser: BrowserContext
) -> None:
    """A machine with no microphone still calls: the page says so, the bot is heard, and
    the caller types; each typed line is a turn the bot answers. Variables show what
    they are for."""
    server: CallServer = await serve(
        fake_bot([], variables='customer = { default = "there", description = "who calls" }')
    )
    await browser.add_init_script(NO_MICROPHONE)
    page = await open_widget(browser, server, "line")
    assert await page.text_content("#var-customer-about") == "who calls"
    assert await page.get_attribute("#var-customer", "aria-describedby") == "var-customer-about"
    assert not await page.is_enabled("#say")  # no call yet
    await page.click("#call")
    await wait_for(page, "!document.querySelector('#say').disabled", "the text box")
    assert "No microphone" in await page.text_content("#errors")
    await page.fill("#say", QUESTION)
    await page.click("#say-send")
    await wait_for(
        page,
        """([question, answer]) => {
          const lines = [...document.querySelectorAll('#transcript li')].map(
            li => li.dataset.role + ': ' + li.querySelector('.text').textContent);
          return lines.includes('customer: ' + question) && lines.includes('bot: ' + answer);
        }""",
        "the typed question and its answer",
        [QUESTION, ANSWER],
    )
    assert await page.input_value("#say") == ""
    await page.click("#hangup")
    await wait_for_record(server)
    record = server.records[-1]
    assert [(e.role, e.text) for e in record.transcript if e.role == "customer"] == [
        ("customer", QUESTION)
    ]
    sent = await page.evaluate("window.__sent")
    assert {"type": "say", "text": QUESTION} in sent["json"]
    assert sent["frames"] == 0  # no audio went up
    await close(page)
