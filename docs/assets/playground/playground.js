/* The decoding playground of llmsforme (docs/playground/index.md).
 *
 * Runs entirely in the browser on precomputed data (docs/playground/data.json,
 * written by scripts/playground_data.py): the 100 most likely next tokens of
 * the course model for a few prompts, with their logits.
 *
 * The first half of this file is pure functions, exported under Node.js for
 * tests/test_playground.py, which checks them against the Python processors
 * (llmsforme.processors.warp). The second half wires up the page.
 *
 * The rule for the top-100 truncation: temperature, top-k and top-p are
 * applied to the 100 stored logits, and probabilities are renormalized over
 * them. Every other token counts as removed, as if top-k = 100 were always
 * on; top-k = 0 ("off") therefore keeps the 100.
 */
(function () {
  "use strict";

  /* ------------------------------------------------------------------ */
  /* Pure functions                                                       */
  /* ------------------------------------------------------------------ */

  // The range of each knob. Values typed outside are clamped, non-numbers rejected.
  var LIMITS = {
    temperature: { name: "Temperature", min: 0.05, max: 3, integer: false },
    topK: { name: "Top-k", min: 0, max: 100, integer: true },
    topP: { name: "Top-p", min: 0.05, max: 1, integer: false },
    seed: { name: "Seed", min: 0, max: 4294967295, integer: true }
  };

  // softmax over an array of numbers; -Infinity gives probability 0.
  function softmax(scores) {
    var max = -Infinity, i;
    for (i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
    var exps = new Array(scores.length), sum = 0;
    for (i = 0; i < scores.length; i++) {
      exps[i] = Math.exp(scores[i] - max);
      sum += exps[i];
    }
    for (i = 0; i < scores.length; i++) exps[i] /= sum;
    return exps;
  }

  /* Temperature, then top-k, then top-p: the order and the rules of
   * llmsforme.processors.warp (and of Hugging Face transformers).
   *   logits: the stored logits, most likely first.
   *   settings: {temperature: > 0, topK: integer >= 0 (0 = off), topP: in (0, 1]}.
   * Returns {scaled, probs, kept, keptCount}: scaled = probabilities after
   * temperature, before filtering; probs = final probabilities (0 if removed);
   * kept = booleans. Ties (none in the shipped data) are broken by the stored
   * order: of two equal logits, top-p removes the one listed later first.
   */
  function filterDistribution(logits, settings) {
    var t = settings.temperature, k = settings.topK, p = settings.topP;
    var n = logits.length, i;
    var scores = logits.slice();
    if (t !== 1) for (i = 0; i < n; i++) scores[i] = scores[i] / t;
    var scaled = softmax(scores);
    if (k !== 0) {
      // Keep the k highest scores and every score tied with the k-th.
      var sorted = scores.slice().sort(function (a, b) { return b - a; });
      var kth = sorted[Math.min(k, n) - 1];
      for (i = 0; i < n; i++) if (scores[i] < kth) scores[i] = -Infinity;
    }
    if (p < 1) {
      // Sort ascending; remove tokens whose cumulative probability is <= 1 - p;
      // the most likely token (the last one) always stays.
      var order = [];
      for (i = 0; i < n; i++) order.push(i);
      order.sort(function (a, b) {
        if (scores[a] !== scores[b]) return scores[a] < scores[b] ? -1 : 1;
        return b - a;
      });
      var sortedScores = order.map(function (j) { return scores[j]; });
      var sortedProbs = softmax(sortedScores);
      var cumulative = 0, remove = [];
      for (i = 0; i < n; i++) {
        cumulative += sortedProbs[i];
        remove.push(cumulative <= 1 - p && i !== n - 1);
      }
      for (i = 0; i < n; i++) if (remove[i]) scores[order[i]] = -Infinity;
    }
    var probs = softmax(scores);
    var kept = scores.map(function (s) { return s !== -Infinity; });
    var keptCount = kept.filter(Boolean).length;
    return { scaled: scaled, probs: probs, kept: kept, keptCount: keptCount };
  }

  // Entropy in bits of a probability vector (zeros contribute nothing).
  function entropyBits(probs) {
    var h = 0;
    for (var i = 0; i < probs.length; i++) if (probs[i] > 0) h -= probs[i] * Math.log2(probs[i]);
    return h === 0 ? 0 : h; // no "-0"
  }

  // mulberry32: a tiny seeded generator of floats in [0, 1).
  function mulberry32(seed) {
    var a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) | 0;
      var t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  /* Draw one token from final probabilities with the seed: u = the first
   * number of mulberry32(seed); walk the tokens in stored order (most likely
   * first) and pick the first whose cumulative probability exceeds u.
   * Returns {index, u, nextSeed}: the seed advances by one after a draw.
   */
  function sampleIndex(probs, seed) {
    var u = mulberry32(seed)();
    var cumulative = 0, last = -1;
    for (var i = 0; i < probs.length; i++) {
      if (probs[i] <= 0) continue;
      last = i;
      cumulative += probs[i];
      if (u < cumulative) return { index: i, u: u, nextSeed: nextSeed(seed) };
    }
    return { index: last, u: u, nextSeed: nextSeed(seed) }; // rounding: the last kept token
  }

  function nextSeed(seed) {
    return ((seed >>> 0) + 1) % 4294967296;
  }

  function formatNumber(x) {
    return String(Math.round(x * 1e6) / 1e6);
  }

  /* Check a value typed by the reader. raw: the text of the field; badInput:
   * true when the browser could not read it as a number.
   * Returns {ok, value, status, message}: status is "ok", "clamped",
   * "rounded" or "rejected" (then value is null and the old value stays).
   */
  function parseSetting(raw, limits, badInput) {
    var range = "enter a " + (limits.integer ? "whole number" : "number") + " from " +
      formatNumber(limits.min) + " to " + formatNumber(limits.max);
    var text = raw === null || raw === undefined ? "" : String(raw).trim();
    if (badInput || text === "") {
      return { ok: false, value: null, status: "rejected",
        message: (badInput ? "Not a number" : "Empty") + ": " + range + "." };
    }
    var value = Number(text);
    if (!isFinite(value) || isNaN(value)) {
      return { ok: false, value: null, status: "rejected",
        message: "\u201C" + text + "\u201D is not a number: " + range + "." };
    }
    var status = "ok", message = "";
    if (limits.integer && value !== Math.round(value)) {
      var rounded = Math.round(value);
      status = "rounded";
      message = limits.name + " is a whole number: " + formatNumber(value) + " rounded to " + rounded + ".";
      value = rounded;
    }
    if (value < limits.min || value > limits.max) {
      var bound = value < limits.min ? limits.min : limits.max;
      message = formatNumber(value) + " is " + (value < limits.min ? "below the minimum" : "above the maximum") +
        ": set to " + formatNumber(bound) + ".";
      status = "clamped";
      value = bound;
    }
    return { ok: true, value: value, status: status, message: message };
  }

  // A token as text that shows its spaces and line breaks.
  function displayToken(text) {
    if (text === "") return "\u2205";
    return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21B5").replace(/\t/g, "\u21E5");
  }

  var api = {
    LIMITS: LIMITS,
    softmax: softmax,
    filterDistribution: filterDistribution,
    entropyBits: entropyBits,
    mulberry32: mulberry32,
    sampleIndex: sampleIndex,
    nextSeed: nextSeed,
    parseSetting: parseSetting,
    displayToken: displayToken
  };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  if (typeof window === "undefined" || typeof document === "undefined") return;
  window.llmsformePlayground = api;

  /* ------------------------------------------------------------------ */
  /* The page                                                             */
  /* ------------------------------------------------------------------ */

  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(p, digits) {
    return (100 * p).toFixed(digits === undefined ? 2 : digits) + "\u202F%";
  }

  function Playground(root, data) {
    this.root = root;
    this.data = data;
    this.$ = function (id) { return document.getElementById(id); };
    this.settings = { temperature: 1, topK: 0, topP: 1 };
    this.committed = { temperature: 1, topK: 0, topP: 1 };
    this.prompt = 0;
    this.step = 0;
    this.shown = 20;
    this.sampled = null;
    this.seed = 42;
    this.build();
    this.render();
  }

  Playground.prototype.build = function () {
    var self = this, $ = this.$;
    var picker = $("pg-prompt");
    picker.textContent = "";
    this.data.prompts.forEach(function (prompt, i) {
      picker.appendChild(el("option", { value: String(i) }, prompt.title));
    });
    picker.value = "0";
    picker.addEventListener("change", function () {
      self.prompt = Number(picker.value) || 0;
      self.step = 0;
      self.sampled = null;
      self.render();
    });
    $("pg-prev").addEventListener("click", function () { self.goStep(-1); });
    $("pg-next").addEventListener("click", function () { self.goStep(1); });
    $("pg-goto-steps").addEventListener("click", function () {
      for (var i = 0; i < self.data.prompts.length; i++) {
        if (self.data.prompts[i].greedy) {
          self.prompt = i;
          picker.value = String(i);
          self.step = 0;
          self.sampled = null;
          self.render();
          $("pg-next").focus();
          return;
        }
      }
    });

    ["temperature", "topK", "topP"].forEach(function (key) { self.wireKnob(key); });

    var seed = $("pg-seed");
    seed.value = String(this.seed);
    seed.addEventListener("input", function () {
      var r = parseSetting(seed.value, LIMITS.seed, seed.validity && seed.validity.badInput);
      if (r.ok && r.status === "ok") { self.seed = r.value; self.message("pg-seed-msg", ""); }
    });
    seed.addEventListener("change", function () { self.commitSeed(); });
    $("pg-sample").addEventListener("click", function () { self.sample(); });
    $("pg-reset").addEventListener("click", function () {
      self.settings = { temperature: 1, topK: 0, topP: 1 };
      self.committed = { temperature: 1, topK: 0, topP: 1 };
      ["temperature", "topK", "topP"].forEach(function (key) {
        self.syncKnob(key);
        self.message(self.ids(key).msg, "");
      });
      self.sampled = null;
      self.render();
    });
    var shown = $("pg-shown");
    shown.value = String(this.shown);
    shown.addEventListener("change", function () {
      self.shown = Number(shown.value) || 20;
      self.renderChart();
    });
    var pending = false;
    this.onResize = function () {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        if (self.root.isConnected) self.renderChart();
        else window.removeEventListener("resize", self.onResize);
      });
    };
    window.addEventListener("resize", this.onResize);
    ["temperature", "topK", "topP"].forEach(function (key) { self.syncKnob(key); });
  };

  Playground.prototype.ids = function (key) {
    var base = { temperature: "pg-temperature", topK: "pg-top-k", topP: "pg-top-p" }[key];
    return { number: base, range: base + "-range", msg: base + "-msg" };
  };

  Playground.prototype.wireKnob = function (key) {
    var self = this, ids = this.ids(key);
    var number = this.$(ids.number), range = this.$(ids.range);
    range.addEventListener("input", function () {
      var r = parseSetting(range.value, LIMITS[key], false);
      if (!r.ok) return;
      self.settings[key] = self.committed[key] = r.value;
      number.value = String(r.value);
      self.message(ids.msg, "");
      self.changed();
    });
    // While typing: apply values that are already valid, say nothing yet.
    number.addEventListener("input", function () {
      var r = parseSetting(number.value, LIMITS[key], number.validity && number.validity.badInput);
      if (!r.ok || r.status !== "ok") return;
      self.settings[key] = r.value;
      range.value = String(r.value);
      self.message(ids.msg, "");
      self.changed();
    });
    // The value before the reader started typing: a rejected entry goes back to it.
    number.addEventListener("focus", function () { self.committed[key] = self.settings[key]; });
    // On Enter or leaving the field: clamp, round or reject, visibly.
    number.addEventListener("change", function () { self.commitKnob(key); });
    number.addEventListener("keydown", function (event) {
      if (event.key === "Enter") self.commitKnob(key);
    });
  };

  Playground.prototype.commitKnob = function (key) {
    var ids = this.ids(key), number = this.$(ids.number);
    // Enter, then the change event: the second time there is nothing new to say.
    if (number.value === String(this.settings[key]) && !(number.validity && number.validity.badInput)) {
      this.committed[key] = this.settings[key];
      return;
    }
    var r = parseSetting(number.value, LIMITS[key], number.validity && number.validity.badInput);
    if (!r.ok) {
      this.settings[key] = this.committed[key];
      this.message(ids.msg, r.message + " Kept " + formatNumber(this.settings[key]) + ".", true);
    } else {
      this.message(ids.msg, r.message, r.status !== "ok");
      this.settings[key] = r.value;
    }
    this.committed[key] = this.settings[key];
    this.syncKnob(key);
    this.changed();
  };

  Playground.prototype.commitSeed = function () {
    var seed = this.$("pg-seed");
    var r = parseSetting(seed.value, LIMITS.seed, seed.validity && seed.validity.badInput);
    if (!r.ok) this.message("pg-seed-msg", r.message + " Kept " + this.seed + ".", true);
    else {
      this.seed = r.value;
      this.message("pg-seed-msg", r.message, r.status !== "ok");
    }
    seed.value = String(this.seed);
  };

  Playground.prototype.syncKnob = function (key) {
    var ids = this.ids(key), value = String(this.settings[key]);
    this.$(ids.number).value = value;
    this.$(ids.range).value = value;
  };

  Playground.prototype.message = function (id, text, warn) {
    var node = this.$(id);
    node.textContent = text || "";
    node.classList.toggle("pg-msg--warn", Boolean(text && warn));
  };

  Playground.prototype.changed = function () {
    this.sampled = null;
    this.render();
  };

  Playground.prototype.goStep = function (delta) {
    var prompt = this.data.prompts[this.prompt];
    var last = prompt.steps.length - 1;
    this.step = Math.max(0, Math.min(last, this.step + delta));
    this.sampled = null;
    this.render();
  };

  Playground.prototype.current = function () {
    var prompt = this.data.prompts[this.prompt];
    return prompt.steps[Math.min(this.step, prompt.steps.length - 1)];
  };

  Playground.prototype.sample = function () {
    this.commitSeed();
    var result = filterDistribution(this.current().logits, this.settings);
    var draw = sampleIndex(result.probs, this.seed);
    var dist = this.current();
    this.sampled = draw.index;
    var out = this.$("pg-sample-result");
    out.textContent = "";
    out.appendChild(document.createTextNode("Seed " + this.seed + " drew "));
    out.appendChild(el("code", { "class": "pg-token" }, displayToken(dist.tokens[draw.index])));
    out.appendChild(document.createTextNode(
      " (rank " + (draw.index + 1) + ", p = " + percent(result.probs[draw.index]) +
      "; u = " + draw.u.toFixed(4) + "). Next seed: " + draw.nextSeed + "."));
    out.setAttribute("data-index", String(draw.index));
    out.setAttribute("data-seed", String(this.seed));
    this.seed = draw.nextSeed;
    this.$("pg-seed").value = String(this.seed);
    this.renderChart(result);
  };

  Playground.prototype.render = function () {
    var prompt = this.data.prompts[this.prompt], $ = this.$;
    var dist = this.current();
    $("pg-note").textContent = prompt.note || "";

    // The prompt, and the greedy tokens chosen before this step.
    var context = $("pg-context");
    context.textContent = "";
    context.appendChild(document.createTextNode(prompt.prompt));
    var steps = prompt.greedy ? prompt.steps.length : 1;
    if (prompt.greedy) {
      var chosen = prompt.greedy.slice(0, this.step).join("");
      if (chosen) context.appendChild(el("mark", { "class": "pg-greedy" }, chosen));
      context.appendChild(el("span", { "class": "pg-cursor", "aria-hidden": "true" }, "\u258F"));
    }
    $("pg-steps").hidden = !prompt.greedy;
    $("pg-nosteps").hidden = Boolean(prompt.greedy);
    if (prompt.greedy) {
      $("pg-prev").disabled = this.step === 0;
      $("pg-next").disabled = this.step >= steps - 1;
      $("pg-step-status").textContent = "Step " + (this.step + 1) + " of " + steps +
        ": greedy decoding picks " + JSON.stringify(prompt.greedy[this.step]) + " here.";
    }

    var result = filterDistribution(dist.logits, this.settings);
    var top = 0;
    for (var i = 1; i < result.probs.length; i++) if (result.probs[i] > result.probs[top]) top = i;
    var entropy = entropyBits(result.probs);
    var kept = $("pg-kept"), ent = $("pg-entropy"), topOut = $("pg-top");
    kept.textContent = result.keptCount + " of " + dist.tokens.length;
    kept.setAttribute("data-value", String(result.keptCount));
    ent.textContent = entropy.toFixed(3) + " bits";
    ent.setAttribute("data-value", String(entropy));
    topOut.textContent = "";
    topOut.appendChild(el("code", { "class": "pg-token" }, displayToken(dist.tokens[top])));
    topOut.appendChild(document.createTextNode(" " + percent(result.probs[top])));
    topOut.setAttribute("data-value", String(result.probs[top]));
    var others = this.data.vocab_size - dist.tokens.length;
    $("pg-rest").textContent = "The other " + others.toLocaleString("en") + " tokens of the vocabulary shared " +
      percent(dist.rest) + " of the probability at T\u00A0=\u00A01; the playground leaves them out.";
    if (this.sampled === null) {
      var out = $("pg-sample-result");
      if (out.getAttribute("data-index") !== null) {
        out.removeAttribute("data-index");
        out.textContent = "Settings or prompt changed: press Sample to draw again.";
      }
    }
    this.renderChart(result);
    this.renderTable(result);
  };

  Playground.prototype.renderChart = function (result) {
    var dist = this.current();
    result = result || filterDistribution(dist.logits, this.settings);
    var box = this.$("pg-chart");
    var width = Math.max(240, Math.floor(box.clientWidth || 600));
    var n = Math.min(this.shown, dist.tokens.length);
    var rowH = 22, top = 6;
    var labelW = width < 480 ? 92 : 132, valueW = width < 480 ? 64 : 76;
    var barX = labelW + 6, barW = Math.max(40, width - barX - valueW - 4);
    var height = top + n * rowH + 4;
    var max = 0, i;
    for (i = 0; i < n; i++) max = Math.max(max, result.kept[i] ? result.probs[i] : result.scaled[i]);
    max = max || 1;
    var svg = svgEl("svg", {
      width: String(width), height: String(height), viewBox: "0 0 " + width + " " + height,
      role: "img", "class": "pg-svg",
      "aria-label": "Bar chart of the " + n + " most likely tokens: " + result.keptCount +
        " kept, the others removed. The table below gives the same numbers."
    });
    var maxChars = width < 480 ? 11 : 16;
    for (i = 0; i < n; i++) {
      var kept = result.kept[i];
      var p = kept ? result.probs[i] : result.scaled[i];
      var y = top + i * rowH;
      var cls = "pg-row " + (kept ? "pg-row--kept" : "pg-row--removed") + (this.sampled === i ? " pg-row--sampled" : "");
      var g = svgEl("g", { "class": cls, "data-index": String(i) });
      var label = displayToken(dist.tokens[i]);
      if (label.length > maxChars) label = label.slice(0, maxChars - 1) + "\u2026";
      g.appendChild(svgEl("title", {}, JSON.stringify(dist.tokens[i]) + (kept
        ? ": kept, " + percent(result.probs[i])
        : ": removed (it had " + percent(result.scaled[i]) + " before filtering)")));
      g.appendChild(svgEl("text", { x: String(labelW), y: String(y + 15), "text-anchor": "end", "class": "pg-label" }, label));
      g.appendChild(svgEl("rect", {
        x: String(barX), y: String(y + 3), height: String(rowH - 6),
        width: String(Math.max(kept ? 1 : 0.5, barW * p / max)), rx: "2", "class": "pg-bar"
      }));
      g.appendChild(svgEl("text", { x: String(width - 4), y: String(y + 15), "text-anchor": "end", "class": "pg-value" },
        kept ? percent(p, 1) : "removed"));
      if (this.sampled === i) {
        g.appendChild(svgEl("rect", { x: "1", y: String(y + 1), width: String(width - 2), height: String(rowH - 2), rx: "3", "class": "pg-mark" }));
      }
      svg.appendChild(g);
    }
    box.textContent = "";
    box.appendChild(svg);
  };

  Playground.prototype.renderTable = function (result) {
    var dist = this.current();
    var body = this.$("pg-table-body");
    body.textContent = "";
    for (var i = 0; i < dist.tokens.length; i++) {
      var kept = result.kept[i];
      var row = el("tr", { "class": kept ? "pg-tr--kept" : "pg-tr--removed", "data-kept": String(kept), "data-index": String(i) });
      row.appendChild(el("td", {}, String(i + 1)));
      var cell = el("td");
      cell.appendChild(el("code", { "class": "pg-token" }, displayToken(dist.tokens[i])));
      row.appendChild(cell);
      row.appendChild(el("td", {}, String(dist.ids[i])));
      row.appendChild(el("td", {}, dist.logits[i].toFixed(3)));
      row.appendChild(el("td", {}, percent(result.scaled[i])));
      row.appendChild(el("td", { "data-value": String(result.probs[i]) }, kept ? percent(result.probs[i]) : "removed"));
      body.appendChild(row);
    }
  };

  function init() {
    var root = document.getElementById("llm-playground");
    if (!root || root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "loading");
    var status = document.getElementById("pg-status");
    var src = root.getAttribute("data-src") || "data.json";
    fetch(src)
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        root.classList.add("pg--ready"); // shown first, so that the chart can measure its width
        if (status) status.textContent = "";
        new Playground(root, data);
        root.setAttribute("data-ready", "true");
      })
      .catch(function (error) {
        root.setAttribute("data-ready", "error");
        if (status) {
          status.textContent = "The playground could not load its data (" + error.message + "). " +
            "Browsers do not let a page opened from a file read other files: serve the site " +
            "(make serve) and open it over http.";
        }
      });
  }

  // Material's instant navigation replaces the page without reloading the
  // scripts: document$ then emits on every page. Without it, run once.
  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(init);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
