// Ask the course: send the question, then show the sources and the answer
// as the server streams them (JSON lines). Text from the server or the
// reader is only ever set with textContent: markup in a question or an
// answer is shown, never run.
"use strict";

const form = document.getElementById("ask");
const question = document.getElementById("question");
const errorBox = document.getElementById("error");
const result = document.getElementById("result");
const answer = document.getElementById("answer");
const sources = document.getElementById("sources");
const button = form.querySelector("button");

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function showSources(list) {
  sources.replaceChildren();
  for (const source of list) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = source.url;
    const same = !source.heading || source.heading === source.title;
    link.textContent = same ? source.title : `${source.title}: ${source.heading}`;
    const path = document.createElement("code");
    path.textContent = source.page;
    item.append(link, " ", path);
    sources.append(item);
  }
}

async function ask(text) {
  errorBox.hidden = true;
  answer.textContent = "";
  sources.replaceChildren();
  result.hidden = true;
  button.disabled = true;
  try {
    const response = await fetch("api/ask", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({question: text}),
    });
    if (!response.ok) {
      let message = `The server answered ${response.status}.`;
      try { message = (await response.json()).error.message; } catch (ignored) { /* keep the status */ }
      showError(message);
      return;
    }
    result.hidden = false;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        const message = JSON.parse(line);
        if (message.sources) showSources(message.sources);
        if (message.text) answer.textContent += message.text;
        if (message.error) showError(message.error.message);
      }
    }
  } catch (failure) {
    showError("The server could not be reached. Is llmsforme ask --serve still running?");
  } finally {
    button.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text) { showError("Write a question first."); return; }
  ask(text);
});
