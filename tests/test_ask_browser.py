"""Ask the course's web page, end to end: the app served, the page in headless Chromium.

A reader's question goes in; the streamed answer of the course model and
the source links come out, and each link opens a real page of the built
site at its section. The error state is checked twice: a question the
server refuses, and a server that is gone. Like the playground's, these
tests need Debian's ``chromium`` and ``chromium-driver`` and are required
in CI (``LLMSFORME_REQUIRE_BROWSER=1``).

The screenshot of the page shown in Part 6 ("Shipping it") is made here:
set ``LLMSFORME_SCREENSHOTS`` to a folder to keep it
(``LLMSFORME_SCREENSHOTS=examples/part-6/data``).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from test_playground_browser import MISSING, REQUIRED, console_errors, driver, site_url  # noqa: F401

pytestmark = pytest.mark.skipif(bool(MISSING) and not REQUIRED, reason=MISSING or "")

QUESTION = "How does top-p differ from top-k?"


@pytest.fixture(scope="module")
def ask_server(ask_index, course_model, site_url):  # noqa: F811
    from llmsforme.apps.ask import Retriever
    from llmsforme.apps.ask.answer import generate_answer
    from llmsforme.apps.ask.web import create_ask_app
    from llmsforme.server import start_app

    model, tokenizer = course_model

    def generate(messages, used, on_text):
        return generate_answer(messages, used, model=model, tokenizer=tokenizer, max_new_tokens=80, on_text=on_text)

    with Retriever(ask_index) as retriever:
        app = create_ask_app(retriever, generate, count_tokens=lambda text: len(tokenizer(text).input_ids),
                             site=site_url)
        server = start_app(app)
        yield server
        server.stop()


def page_state(driver):  # noqa: F811
    return driver.execute_script(
        """
        const $ = id => document.getElementById(id);
        return {
          answer: $('answer').textContent,
          links: [...document.querySelectorAll('#sources a')].map(a => a.href),
          error: $('error').hidden ? null : $('error').textContent,
          busy: document.querySelector('#ask button').disabled,
          result: !$('result').hidden,
        };
        """
    )


def ask(driver, question):  # noqa: F811
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "#ask button").click()


def wait_until(driver, condition, seconds=60):  # noqa: F811
    from selenium.webdriver.support.ui import WebDriverWait

    def state_when_true(d):
        state = page_state(d)
        return state if condition(state) else False

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(state_when_true)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_question_gets_a_streamed_answer_and_working_source_links(driver, ask_server, site_url):  # noqa: F811
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1000, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    driver.get(ask_server.url)
    driver.get_log("browser")
    ask(driver, QUESTION)

    first = wait_until(driver, lambda s: s["answer"])  # text arrives while the model still writes
    assert first["busy"], "the answer should stream: the first text came only at the end"
    assert first["links"], "the sources come before the answer"
    done = wait_until(driver, lambda s: not s["busy"])
    assert done["error"] is None and done["result"]
    assert len(done["answer"]) > len(first["answer"])
    assert all(link.startswith(site_url) for link in done["links"])
    assert any("/part-1/top-k-top-p/" in link for link in done["links"]), done["links"]
    assert not console_errors(driver)

    shot = driver.get_screenshot_as_png()
    assert png_size(shot) == (1000, 900)
    if os.environ.get("LLMSFORME_SCREENSHOTS"):
        (Path(os.environ["LLMSFORME_SCREENSHOTS"]) / "ask-page.png").write_bytes(shot)

    for link in done["links"]:  # every source opens a real page, at its section
        driver.get(link)
        anchor = link.split("#", 1)[1] if "#" in link else None
        assert driver.execute_script("return document.querySelector('article h1') !== null"), link
        if anchor:
            assert driver.execute_script("return document.getElementById(arguments[0]) !== null", anchor), link


def test_a_refused_question_shows_the_servers_message(driver, ask_server):  # noqa: F811
    driver.get(ask_server.url)
    # The text box stops at 2,000 characters; a script can still send more, and the server refuses.
    driver.execute_script("document.getElementById('question').value = 'x'.repeat(10000)")
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#ask button").click()
    state = wait_until(driver, lambda s: s["error"], seconds=15)
    assert "10,000 characters; the limit is 2,000" in state["error"]
    assert not state["result"] and not state["busy"]


def test_markup_in_a_question_is_shown_as_text(driver, ask_server):  # noqa: F811
    driver.get(ask_server.url)
    driver.execute_script("window.ran = false")
    ask(driver, '<img src=x onerror="window.ran = true"> top-p?')
    wait_until(driver, lambda s: not s["busy"] and s["result"])
    assert driver.execute_script("return window.ran") is False
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0


def test_a_server_that_is_gone_is_an_error_on_the_page(driver, ask_server):  # noqa: F811
    driver.get(ask_server.url)
    ask_server.stop()
    ask(driver, QUESTION)
    state = wait_until(driver, lambda s: s["error"], seconds=15)
    assert "could not be reached" in state["error"]
    assert not state["busy"]
