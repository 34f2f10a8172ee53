"""The decoding playground: its data file, and its JavaScript against the Python processors.

The JavaScript (docs/assets/playground/playground.js) runs under Node.js on
the same inputs as ``llmsforme.processors.warp``; both must keep the same
tokens and give the same probabilities. The browser test of the page itself is
tests/test_playground_browser.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from llmsforme.processors import warp

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "playground" / "data.json"
JS = ROOT / "docs" / "assets" / "playground" / "playground.js"
CSS = ROOT / "docs" / "assets" / "playground" / "playground.css"
SCRIPT = ROOT / "scripts" / "playground_data.py"


def load_script():
    spec = importlib.util.spec_from_file_location("playground_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return json.loads(DATA.read_text(encoding="utf-8"))


def distributions(data):
    """Every stored distribution: (name, step)."""
    return [(f"{p['id']}[{i}]", step) for p in data["prompts"] for i, step in enumerate(p["steps"])]


@pytest.fixture
def one_thread():
    """Small tensors: one thread is much faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def node():
    path = shutil.which("node")
    if path is None:
        message = "node not installed: the JavaScript tests of the playground not run"
        if os.environ.get("LLMSFORME_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_js(node, body: str, payload) -> object:
    """Run ``body`` under Node with ``pg`` = the playground's exports and ``input`` = payload."""
    program = (
        f"const pg = require({json.dumps(str(JS))});\n"
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        f"const output = (function () {{ {body} }})();\n"
        "process.stdout.write(JSON.stringify(output));\n"
    )
    result = subprocess.run(
        [node, "-e", program], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def reference(logits: list[float], temperature: float, top_k: int, top_p: float):
    """The Python processors on the stored logits (float64, like JavaScript numbers)."""
    scores = warp(torch.tensor(logits, dtype=torch.float64), temperature=temperature, top_k=top_k, top_p=top_p)
    return torch.softmax(scores, -1), scores.isfinite()


# -- the data file ---------------------------------------------------------------


def test_data_file_is_what_the_script_computes(course_model, data):
    """The shipped data.json equals what scripts/playground_data.py computes now."""
    script = load_script()
    fresh = script.compute_playground_data(*course_model)
    assert {k: v for k, v in fresh.items() if k != "prompts"} == {k: v for k, v in data.items() if k != "prompts"}
    assert [p["id"] for p in fresh["prompts"]] == [p["id"] for p in data["prompts"]]
    for new, old in zip(fresh["prompts"], data["prompts"]):
        assert {k: v for k, v in new.items() if k != "steps"} == {k: v for k, v in old.items() if k != "steps"}
        assert len(new["steps"]) == len(old["steps"]), new["id"]
        for a, b in zip(new["steps"], old["steps"]):
            assert a["ids"] == b["ids"] and a["tokens"] == b["tokens"], new["id"]
            # float32 logits of size ~20 differ by a few 1e-5 between CPUs (other
            # SIMD kernels, other summation order: measured up to 3e-5), and the
            # stored values are rounded to 1e-5. A regenerated or edited file
            # differs by far more than 1e-4.
            assert max(abs(x - y) for x, y in zip(a["logits"], b["logits"])) <= 1e-4, new["id"]
            assert abs(a["rest"] - b["rest"]) <= 10.0 ** -script.REST_DECIMALS * 2, new["id"]


def test_data_file_shape(data):
    assert DATA.stat().st_size < 300_000
    assert 6 <= len(data["prompts"]) <= 10
    prompts = {p["id"]: p for p in data["prompts"]}
    assert prompts["spain"]["prompt"] == "The rain in Spain falls mainly in the"
    chats = [p for p in data["prompts"] if p["kind"] == "chat"]
    assert chats and all(p["prompt"].rstrip().endswith("<|im_start|>assistant") for p in chats)
    continued = [p for p in data["prompts"] if "greedy" in p]
    assert len(continued) == 1 and 8 <= len(continued[0]["steps"]) <= 16
    assert len(continued[0]["greedy"]) == len(continued[0]["steps"])
    for name, step in distributions(data):
        assert len(step["tokens"]) == len(step["ids"]) == len(step["logits"]) == data["top"] == 100, name
        logits = step["logits"]
        # Sorted, and no ties: with a tie, which of two equal tokens top-p
        # removes would depend on the sort (torch's is not stable).
        assert all(a > b for a, b in zip(logits, logits[1:])), f"{name}: logits not strictly decreasing"
        assert all(round(x, data["decimals"]) == x for x in logits), name
        assert 0 <= step["rest"] < 1, name
    # A flat distribution and a peaked one (over the 100 tokens, as the page shows them).
    top = {p["id"]: torch.tensor(p["steps"][0]["logits"]).softmax(-1).max().item() for p in data["prompts"]}
    assert top["once"] < 0.1 and top["count"] > 0.9
    for i, token in enumerate(continued[0]["greedy"]):
        assert token == continued[0]["steps"][i]["tokens"][0]


def test_truncation_rule_equals_warp_on_the_whole_vocabulary(course_lm, data, one_thread):
    """The page's rule (top 100 only) is warp on all 49,152 logits with top_k = min(k, 100) or 100."""
    step = data["prompts"][0]["steps"][0]
    ids = course_lm.encode(data["prompts"][0]["prompt"])
    full, _ = course_lm.start(torch.tensor([ids]))
    full = full[0].to(torch.float64)
    assert full.topk(100).indices.tolist() == step["ids"]
    for t, k, p in [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.5, 20, 0.95), (0.3, 5, 0.5), (2.0, 100, 0.8)]:
        probs, kept = reference(step["logits"], t, k, p)
        full_probs = torch.softmax(warp(full, temperature=t, top_k=k if 0 < k <= 100 else 100, top_p=p), -1)
        full_kept = full_probs > 0
        assert full_kept.nonzero().flatten().tolist() == sorted(
            step["ids"][i] for i in kept.nonzero().flatten().tolist()
        ), (t, k, p)
        assert torch.allclose(full_probs[step["ids"]], probs, atol=2e-4), (t, k, p)


# -- the JavaScript against the Python processors --------------------------------


def settings_grid():
    grid = [
        (t, k, p)
        for t in (0.05, 0.3, 0.7, 1.0, 1.5, 3.0)
        for k in (0, 1, 3, 40, 100)
        for p in (0.05, 0.5, 0.9, 1.0)
    ]
    rng = random.Random(6)
    grid += [
        (round(rng.uniform(0.05, 3), 2), rng.randint(0, 100), round(rng.uniform(0.05, 1), 2)) for _ in range(60)
    ]
    return grid


def test_javascript_filtering_equals_python_processors(node, data, one_thread):
    dists = distributions(data)
    grid = settings_grid()
    payload = {
        "logits": [step["logits"] for _, step in dists],
        "settings": [{"temperature": t, "topK": k, "topP": p} for t, k, p in grid],
    }
    body = """
      return input.settings.map(s => input.logits.map(l => {
        const r = pg.filterDistribution(l, s);
        return [r.probs, r.kept, r.scaled, r.keptCount, pg.entropyBits(r.probs)];
      }));
    """
    js = run_js(node, body, payload)
    logits = torch.tensor(payload["logits"], dtype=torch.float64)
    names = [name for name, _ in dists]
    for (t, k, p), js_rows in zip(grid, js):
        where = f"T={t} k={k} p={p}"
        scores = warp(logits, temperature=t, top_k=k, top_p=p)  # all distributions at once
        probs, kept = torch.softmax(scores, -1), scores.isfinite()
        js_probs, js_kept, js_scaled, js_count, js_entropy = (list(x) for x in zip(*js_rows))
        js_kept = torch.tensor(js_kept)
        if not torch.equal(js_kept, kept):
            bad = [names[i] for i in range(len(names)) if not torch.equal(js_kept[i], kept[i])]
            raise AssertionError(f"{where}: kept sets differ for {bad}")
        assert js_count == kept.sum(-1).tolist(), where
        assert (torch.tensor(js_probs, dtype=torch.float64) - probs).abs().max() <= 1e-6, where
        scaled = torch.softmax(logits / t, -1)
        assert (torch.tensor(js_scaled, dtype=torch.float64) - scaled).abs().max() <= 1e-6, where
        entropy = -torch.where(probs > 0, probs * probs.log2(), torch.zeros_like(probs)).sum(-1)
        assert (torch.tensor(js_entropy, dtype=torch.float64) - entropy).abs().max() <= 1e-6, where
    assert len(grid) * len(dists) > 3000


def test_javascript_on_ties_and_edge_cases(node):
    """Ties at the k-th place are kept; the most likely token always stays."""
    cases = [
        ([3.0, 2.0, 2.0, 1.0], 1.0, 2, 1.0),
        ([3.0, 2.0, 2.0, 1.0], 1.0, 1, 1.0),
        ([5.0, 0.0, -1.0], 1.0, 0, 0.05),
        ([0.0, 0.0, 0.0, 0.0], 1.0, 0, 0.5),  # uniform: ties; the first listed are kept
        ([1.0, 0.5], 1.0, 500, 1.0),  # k above the size
        ([math.log(0.5), math.log(0.3), math.log(0.2)], 1.0, 0, 0.7),
    ]
    js = run_js(
        node,
        "return input.map(c => pg.filterDistribution(c[0], {temperature: c[1], topK: c[2], topP: c[3]}).kept);",
        cases,
    )
    assert js[0] == [True, True, True, False]
    assert js[1] == [True, False, False, False]
    assert js[2] == [True, False, False]
    assert js[3] == [True, True, False, False]
    assert js[4] == [True, True]
    assert js[5] == [True, True, False]
    for (logits, t, k, p), js_kept in zip(cases[:3] + cases[4:], js[:3] + js[4:]):
        assert js_kept == reference(logits, t, k, p)[1].tolist()


# -- the seeded sampler -----------------------------------------------------------


def mulberry32(seed: int):
    """A Python port of the page's generator, to check it is the classic mulberry32."""
    state = seed & 0xFFFFFFFF

    def imul(a, b):
        return (a * b) & 0xFFFFFFFF

    def draw():
        nonlocal state
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = imul(state ^ (state >> 15), 1 | state)
        t = ((t + imul(t ^ (t >> 7), 61 | t)) & 0xFFFFFFFF) ^ t
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296

    return draw


def test_seeded_sampling_is_reproducible(node, data):
    logits = data["prompts"][0]["steps"][0]["logits"]
    seeds = [0, 1, 7, 42, 2**31, 2**32 - 1] + list(range(1000, 1400))
    body = """
      const f = pg.filterDistribution(input.logits, {temperature: 1.2, topK: 30, topP: 0.9});
      return {
        first: input.seeds.map(s => pg.sampleIndex(f.probs, s)),
        again: input.seeds.map(s => pg.sampleIndex(f.probs, s).index),
        raw: input.seeds.slice(0, 6).map(s => { const g = pg.mulberry32(s); return [g(), g(), g()]; }),
        kept: f.kept, probs: f.probs,
      };
    """
    js = run_js(node, body, {"logits": logits, "seeds": seeds})
    # Same seed, same token; the seed advances by one (and wraps around).
    assert [d["index"] for d in js["first"]] == js["again"]
    assert [d["nextSeed"] for d in js["first"]] == [(s + 1) % 2**32 for s in seeds]
    # The generator is mulberry32, and the draw is the inverse of the cumulative distribution.
    for seed, values in zip(seeds, js["raw"]):
        g = mulberry32(seed)
        assert values == [g(), g(), g()]
    probs = js["probs"]
    for seed, d in zip(seeds, js["first"]):
        u = mulberry32(seed)()
        assert d["u"] == u
        assert js["kept"][d["index"]]
        assert sum(probs[: d["index"]]) <= u < sum(probs[: d["index"] + 1]) + 1e-12
    # Different seeds draw different tokens, about as often as the probabilities say.
    counts = [0] * len(probs)
    for d in js["first"]:
        counts[d["index"]] += 1
    assert counts[0] / len(seeds) == pytest.approx(probs[0], abs=0.08)
    assert sum(1 for c in counts if c) >= 5


# -- typed values -------------------------------------------------------------------


def test_typed_values_are_clamped_or_rejected(node):
    cases = [
        ("temperature", "0.7", False), ("temperature", " 2 ", False), ("temperature", "", False),
        ("temperature", "abc", False), ("temperature", "", True), ("temperature", "-1", False),
        ("temperature", "0", False), ("temperature", "1e3", False), ("temperature", "Infinity", False),
        ("topK", "2.5", False), ("topK", "-3", False), ("topK", "250", False), ("topK", "40", False),
        ("topP", "0", False), ("topP", "1.5", False), ("topP", "NaN", False), ("seed", "-1", False),
    ]
    js = run_js(node, "return input.map(c => pg.parseSetting(c[1], pg.LIMITS[c[0]], c[2]));", cases)
    got = [(r["status"], r["value"]) for r in js]
    assert got == [
        ("ok", 0.7), ("ok", 2), ("rejected", None),
        ("rejected", None), ("rejected", None), ("clamped", 0.05),
        ("clamped", 0.05), ("clamped", 3), ("rejected", None),
        ("rounded", 3), ("clamped", 0), ("clamped", 100), ("ok", 40),
        ("clamped", 0.05), ("clamped", 1), ("rejected", None), ("clamped", 0),
    ]
    assert all(r["message"] for r in js if r["status"] != "ok")
    assert "above the maximum" in js[7]["message"] and "not a number" in js[3]["message"]


def test_assets_are_small():
    assert JS.stat().st_size + CSS.stat().st_size < 50_000
