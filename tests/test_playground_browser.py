"""The decoding playground, end to end: the built site in headless Chromium.

The knobs are set the way a reader sets them (typing in the number fields,
arrow keys on the sliders), and what the page shows is checked against the
Python processors. Needs Debian's ``chromium`` and ``chromium-driver``: the
tests skip without them, or fail if ``LLMSFORME_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from llmsforme.processors import warp

ROOT = Path(__file__).resolve().parents[1]
DATA = json.loads((ROOT / "docs" / "playground" / "data.json").read_text(encoding="utf-8"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRED = os.environ.get("LLMSFORME_REQUIRE_BROWSER") == "1"


def _missing() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return "chromium not installed: browser tests not run"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: browser tests not run"
    return None


MISSING = _missing()
# Without a browser: skip before the site is built, unless CI requires the browser.
pytestmark = pytest.mark.skipif(bool(MISSING) and not REQUIRED, reason=MISSING or "")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_url(built_site):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built_site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver():
    if MISSING:
        pytest.fail(f"{MISSING} (LLMSFORME_REQUIRE_BROWSER=1)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llmsforme-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_playground(driver, site_url, width=1280, height=900):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    driver.get(site_url + "playground/")
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.getElementById('llm-playground').dataset.ready") in ("true", "error")
    )
    assert driver.execute_script("return document.getElementById('llm-playground').dataset.ready") == "true"
    driver.get_log("browser")  # forget messages of the page load (e.g. a missing favicon)
    return driver


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def type_value(driver, element_id, text):
    """Select the field's content, type ``text``, press Enter."""
    from selenium.webdriver.common.keys import Keys

    field = by_id(driver, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    field.send_keys(text + Keys.ENTER)


def press(driver, element_id, *keys):
    by_id(driver, element_id).send_keys(*keys)


def shown(driver):
    """What the page displays: kept tokens (table rows and chart bars), count, top probability."""
    return driver.execute_script(
        """
        const $ = id => document.getElementById(id);
        const rows = [...document.querySelectorAll('#pg-table-body tr')];
        return {
          kept: rows.filter(r => r.dataset.kept === 'true').map(r => Number(r.dataset.index)),
          bars: [...document.querySelectorAll('#pg-chart g.pg-row--kept')].map(g => Number(g.dataset.index)),
          barsShown: document.querySelectorAll('#pg-chart g.pg-row').length,
          count: $('pg-kept').textContent,
          top: $('pg-top').textContent,
          topValue: Number($('pg-top').dataset.value),
          settings: ['pg-temperature', 'pg-top-k', 'pg-top-p'].map(id => $(id).value),
          sliders: ['pg-temperature-range', 'pg-top-k-range', 'pg-top-p-range'].map(id => $(id).value),
        };
        """
    )


def expected(prompt_index, step, temperature, top_k, top_p):
    logits = DATA["prompts"][prompt_index]["steps"][step]["logits"]
    scores = warp(torch.tensor(logits, dtype=torch.float64), temperature=temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(scores, -1)
    return scores.isfinite().nonzero().flatten().tolist(), float(probs.max())


def check(driver, prompt_index, step, temperature, top_k, top_p):
    kept, top = expected(prompt_index, step, temperature, top_k, top_p)
    page = shown(driver)
    where = f"T={temperature} k={top_k} p={top_p}: {page}"
    assert page["kept"] == kept, where
    assert page["bars"] == [i for i in kept if i < page["barsShown"]], where
    assert page["count"] == f"{len(kept)} of 100", where
    assert abs(page["topValue"] - top) <= 1e-6, where
    shown_percent = float(re.search(r"([\d.]+)\s*%", page["top"]).group(1))
    assert abs(shown_percent - 100 * top) <= 0.0051, where
    return page


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


# -- the knobs give what the Python processors give --------------------------------


def test_knobs_match_the_python_processors(driver, site_url):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    open_playground(driver, site_url)
    check(driver, 0, 0, 1.0, 0, 1.0)

    type_value(driver, "pg-temperature", "0.5")
    page = check(driver, 0, 0, 0.5, 0, 1.0)
    assert page["sliders"][0] == "0.5"

    press(driver, "pg-top-k-range", Keys.HOME, *[Keys.ARROW_RIGHT] * 7)  # the slider, by keyboard
    page = check(driver, 0, 0, 0.5, 7, 1.0)
    assert page["settings"][1] == "7" and page["kept"] == list(range(7))

    type_value(driver, "pg-top-p", "0.3")
    check(driver, 0, 0, 0.5, 7, 0.3)

    press(driver, "pg-temperature-range", *[Keys.ARROW_RIGHT] * 4)  # 0.5 -> 0.7
    page = check(driver, 0, 0, 0.7, 7, 0.3)
    assert page["settings"][0] == "0.7"

    type_value(driver, "pg-top-k", "0")
    type_value(driver, "pg-top-p", "0.9")
    check(driver, 0, 0, 0.7, 0, 0.9)

    # Another prompt, the same knobs.
    flat = next(i for i, p in enumerate(DATA["prompts"]) if p["id"] == "once")
    Select(by_id(driver, "pg-prompt")).select_by_value(str(flat))
    check(driver, flat, 0, 0.7, 0, 0.9)
    type_value(driver, "pg-temperature", "2.5")
    type_value(driver, "pg-top-k", "60")
    type_value(driver, "pg-top-p", "0.95")
    check(driver, flat, 0, 2.5, 60, 0.95)

    # Reset.
    by_id(driver, "pg-reset").click()
    check(driver, flat, 0, 1.0, 0, 1.0)
    assert console_errors(driver) == []


def test_bad_values_are_clamped_or_rejected(driver, site_url):
    open_playground(driver, site_url)
    type_value(driver, "pg-temperature", "0.8")

    def message(knob):
        return by_id(driver, f"pg-{knob}-msg").text

    type_value(driver, "pg-temperature", "")  # empty: rejected, the old value stays
    assert "Empty" in message("temperature") and "Kept 0.8" in message("temperature")
    page = check(driver, 0, 0, 0.8, 0, 1.0)
    assert page["settings"][0] == "0.8"

    type_value(driver, "pg-temperature", "7")  # above the range: clamped
    assert "above the maximum" in message("temperature")
    page = check(driver, 0, 0, 3.0, 0, 1.0)
    assert page["settings"][0] == "3" and page["sliders"][0] == "3"

    type_value(driver, "pg-temperature", "-2")  # negative: clamped
    assert "below the minimum" in message("temperature")
    check(driver, 0, 0, 0.05, 0, 1.0)

    type_value(driver, "pg-top-k", "-5")
    assert "below the minimum" in message("top-k")
    type_value(driver, "pg-top-k", "250")
    assert "above the maximum" in message("top-k")
    type_value(driver, "pg-top-k", "12.5")
    assert "rounded to 13" in message("top-k")
    check(driver, 0, 0, 0.05, 13, 1.0)

    for text in ("abc", "1e", "--"):  # text: the browser keeps some, none is a number
        type_value(driver, "pg-top-p", "0.6")
        type_value(driver, "pg-top-p", text)
        assert "Kept 0.6" in message("top-p"), text
        assert by_id(driver, "pg-top-p").get_attribute("value") == "0.6"
        check(driver, 0, 0, 0.05, 13, 0.6)
    assert "pg-msg--warn" in by_id(driver, "pg-top-p-msg").get_attribute("class")

    type_value(driver, "pg-seed", "-1")
    assert "below the minimum" in by_id(driver, "pg-seed-msg").text

    # Still working: a valid value clears the message and updates the page.
    type_value(driver, "pg-temperature", "1.2")
    assert message("temperature") == ""
    check(driver, 0, 0, 1.2, 13, 0.6)
    assert console_errors(driver) == []


# -- sampling and the step-through ---------------------------------------------------


def mulberry32_first(seed: int) -> float:
    """The first number of mulberry32(seed), as the page computes it."""
    a = (seed + 0x6D2B79F5) & 0xFFFFFFFF
    t = (a ^ (a >> 15)) * (1 | a) & 0xFFFFFFFF
    t = ((t + ((t ^ (t >> 7)) * (61 | t) & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ t
    return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296


def expected_sample(prompt_index, step, temperature, top_k, top_p, seed):
    logits = DATA["prompts"][prompt_index]["steps"][step]["logits"]
    scores = warp(torch.tensor(logits, dtype=torch.float64), temperature=temperature, top_k=top_k, top_p=top_p)
    u, cumulative = mulberry32_first(seed), 0.0
    probs = torch.softmax(scores, -1).tolist()
    for i, p in enumerate(probs):
        cumulative += p
        if p > 0 and u < cumulative:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)


def test_sample_with_a_seed(driver, site_url):
    open_playground(driver, site_url)
    type_value(driver, "pg-temperature", "1.5")
    type_value(driver, "pg-top-k", "20")
    draws = []
    for seed in (7, 7, 123, 2024):
        type_value(driver, "pg-seed", str(seed))
        by_id(driver, "pg-sample").click()
        result = by_id(driver, "pg-sample-result")
        index = int(result.get_attribute("data-index"))
        assert int(result.get_attribute("data-seed")) == seed
        assert index == expected_sample(0, 0, 1.5, 20, 1.0, seed)
        assert by_id(driver, "pg-seed").get_attribute("value") == str(seed + 1)  # the seed advances
        assert DATA["prompts"][0]["steps"][0]["tokens"][index].replace(" ", "\u2423") in result.text
        marked = driver.execute_script(
            "return [...document.querySelectorAll('#pg-chart g.pg-row--sampled')].map(g => Number(g.dataset.index))"
        )
        assert marked == ([index] if index < 20 else [])
        draws.append(index)
    assert draws[0] == draws[1]
    # A second press draws with the next seed.
    by_id(driver, "pg-sample").click()
    assert int(by_id(driver, "pg-sample-result").get_attribute("data-index")) == expected_sample(0, 0, 1.5, 20, 1.0, 2025)
    assert console_errors(driver) == []


def test_step_through_the_greedy_continuation(driver, site_url):
    open_playground(driver, site_url)
    index = next(i for i, p in enumerate(DATA["prompts"]) if "greedy" in p)
    prompt = DATA["prompts"][index]
    by_id(driver, "pg-goto-steps").click()
    assert by_id(driver, "pg-prompt").get_attribute("value") == str(index)
    assert by_id(driver, "pg-prev").get_attribute("disabled") is not None
    assert "Step 1 of %d" % len(prompt["steps"]) in by_id(driver, "pg-step-status").text
    type_value(driver, "pg-top-p", "0.8")
    for _ in range(3):
        by_id(driver, "pg-next").click()
    context = by_id(driver, "pg-context").get_attribute("textContent")
    assert context.startswith(prompt["prompt"]) and "".join(prompt["greedy"][:3]) in context[len(prompt["prompt"]) :]
    check(driver, index, 3, 1.0, 0, 0.8)
    by_id(driver, "pg-prev").click()
    check(driver, index, 2, 1.0, 0, 0.8)
    for _ in range(len(prompt["steps"]) + 2):  # clicking past the end is harmless
        by_id(driver, "pg-next").click() if by_id(driver, "pg-next").is_enabled() else None
    assert by_id(driver, "pg-next").get_attribute("disabled") is not None
    last = len(prompt["steps"])
    assert f"Step {last} of {last}" in by_id(driver, "pg-step-status").text
    check(driver, index, len(prompt["steps"]) - 1, 1.0, 0, 0.8)
    assert console_errors(driver) == []


# -- keyboard, labels, phone width ---------------------------------------------------


def test_keyboard_order_labels_and_focus(driver, site_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_playground(driver, site_url)
    unlabeled = driver.execute_script(
        """
        return [...document.querySelectorAll('#llm-playground input, #llm-playground select')]
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id);
        """
    )
    assert unlabeled == []
    driver.execute_script("document.getElementById('pg-prompt').focus()")
    order, outlines = [], {}
    for _ in range(25):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        element_id, outline = driver.execute_script(
            "const e = document.activeElement; return [e.id, getComputedStyle(e).outlineStyle];"
        )
        order.append(element_id)
        outlines[element_id] = outline
    controls = [
        "pg-goto-steps", "pg-temperature-range", "pg-temperature", "pg-top-k-range", "pg-top-k",
        "pg-top-p-range", "pg-top-p", "pg-seed", "pg-sample", "pg-reset", "pg-shown",
    ]
    positions = [order.index(c) for c in controls]  # each is reachable by Tab ...
    assert positions == sorted(positions), order  # ... in reading order
    assert all(outlines[c] != "none" for c in controls), outlines  # with a visible focus


def test_phone_width_has_no_horizontal_overflow(driver, site_url):
    open_playground(driver, site_url, width=360, height=800)
    type_value(driver, "pg-top-k", "5")
    widths = driver.execute_script(
        """
        const svg = document.querySelector('#pg-chart svg');
        return [document.documentElement.scrollWidth, document.documentElement.clientWidth,
                svg.getBoundingClientRect().right, document.getElementById('pg-chart').getBoundingClientRect().right];
        """
    )
    assert widths[0] <= widths[1], widths
    assert widths[2] <= widths[3] + 0.5, widths
    check(driver, 0, 0, 1.0, 5, 1.0)


def test_notebook_page_math_and_solutions_in_the_browser(driver, site_url):
    """A notebook page (mkdocs-jupyter): KaTeX renders its $...$ math, solutions start closed."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(site_url + "part-1/top-k-top-p/")
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.querySelectorAll('.jp-MarkdownCell .katex').length") > 0
    )
    left = driver.execute_script(
        "return [...document.querySelectorAll('.jp-MarkdownCell p')].filter(p => /\\$[^$]+\\$/.test(p.textContent)).length"
    )
    assert left == 0, "some $...$ math was left unrendered"
    details = driver.execute_script("return [...document.querySelectorAll('.jupyter-wrapper details')].map(d => d.open)")
    assert details and not any(details), details
    assert console_errors(driver) == []
