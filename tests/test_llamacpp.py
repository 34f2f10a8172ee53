"""llama.cpp behind the package's LanguageModel: the strategies of Part 1 on the GGUF file itself."""

from __future__ import annotations

import pytest
import torch

from llmsforme import beam_search, chat, greedy, load_model, sample
from llmsforme.chat import chat_prompt
from llmsforme.lm import LlamaCppLanguageModel, as_language_model
from llmsforme.model_source import find_course_gguf, load_llama

PROMPTS = ["The rain in Spain", "Once upon a time, in a small village,", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def llama_model():
    return load_model(backend="llama.cpp", n_threads=2)


def own_greedy(llama, ids, n):
    """llama.cpp's own greedy generation (top-k 1), n tokens."""
    tokens = []
    for token in llama.generate(ids, top_k=1, temp=0.0, reset=True):
        tokens.append(token)
        if len(tokens) == n:
            return tokens
    return tokens


def test_load_model_gives_llama_and_the_course_tokenizer(llama_model):
    llama, tokenizer = llama_model
    lm = as_language_model(llama, tokenizer)
    assert isinstance(lm, LlamaCppLanguageModel)
    assert lm.vocab_size == len(tokenizer) == 49152
    assert lm.eos_token_ids == (2,) and lm.context_window == 8192


@pytest.mark.parametrize("text", ["The rain in Spain", "héllo wörld 🌧️ 42", "<|im_start|>user\nHi<|im_end|>\n", "  two  spaces"])
def test_llama_cpp_and_hugging_face_tokenize_alike(llama_model, text):
    llama, tokenizer = llama_model
    lm = as_language_model(llama)
    assert lm.encode(text) == tokenizer(text, add_special_tokens=False).input_ids
    assert lm.decode(lm.encode(text)) == text


@pytest.mark.parametrize("prompt", PROMPTS)
def test_our_greedy_equals_llama_cpps_own(llama_model, prompt):
    llama, tokenizer = llama_model
    ours = greedy(llama, prompt, tokenizer=tokenizer, max_new_tokens=32, eos_token_id=[])
    assert ours.token_ids == own_greedy(llama, as_language_model(llama).encode(prompt), 32)


def test_seeded_sampling_is_reproducible(llama_model):
    llama, tokenizer = llama_model
    first = sample(llama, PROMPTS[1], tokenizer=tokenizer, seed=3, temperature=0.9, top_p=0.95, max_new_tokens=24)
    again = sample(llama, PROMPTS[1], tokenizer=tokenizer, seed=3, temperature=0.9, top_p=0.95, max_new_tokens=24)
    other = sample(llama, PROMPTS[1], tokenizer=tokenizer, seed=4, temperature=0.9, top_p=0.95, max_new_tokens=24)
    assert first.token_ids == again.token_ids != other.token_ids


def test_beam_search_runs_on_saved_states(llama_model):
    llama, tokenizer = llama_model
    one_beam = beam_search(llama, PROMPTS[0], tokenizer=tokenizer, num_beams=1, max_new_tokens=10, eos_token_id=[])
    assert one_beam.token_ids == greedy(llama, PROMPTS[0], tokenizer=tokenizer, max_new_tokens=10, eos_token_id=[]).token_ids
    beams = beam_search(llama, PROMPTS[0], tokenizer=tokenizer, num_beams=3, num_return_sequences=3, max_new_tokens=10)
    assert len(set(map(tuple, beams.sequences))) == 3
    assert beams.scores == sorted(beams.scores, reverse=True)
    # Each returned beam's score is its own log-probability, recomputed one token at a time.
    lm = as_language_model(llama)
    sequence = beams.sequences[0]
    logits, cache = lm.start(torch.tensor([lm.encode(PROMPTS[0])]))
    total = 0.0
    for token in sequence:
        total += float(torch.log_softmax(logits[0], -1)[token])
        logits, cache = lm.advance(cache, torch.tensor([token]))
    assert total / len(sequence) == pytest.approx(beams.scores[0], abs=1e-4)


def test_chat_runs_on_llama_cpp(llama_model):
    llama, tokenizer = llama_model
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = chat(llama, tokenizer, messages, max_new_tokens=16)[-1]["content"]
    prompt = chat_prompt(tokenizer, messages)
    lm = as_language_model(llama)
    ids = greedy(llama, prompt.ids, max_new_tokens=16, eos_token_id=prompt.stop_ids(lm)).token_ids
    assert reply == lm.decode([i for i in ids if i != 2]) and reply


def test_a_generation_that_lost_the_context_fails_loudly(llama_model):
    llama, _ = llama_model
    lm = as_language_model(llama)
    _, first = lm.start(torch.tensor([lm.encode("One")]))
    lm.start(torch.tensor([lm.encode("Two")]))  # another generation takes the context
    with pytest.raises(RuntimeError, match="another generation"):
        lm.advance(first, torch.tensor([5]))


def test_bad_gguf_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        load_llama(tmp_path / "missing.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_llama(text)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(find_course_gguf().read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="damaged or incomplete"):
        load_llama(truncated)
    with pytest.raises(ValueError, match="backend"):
        load_model(backend="vllm")
    with pytest.raises(ValueError, match=".gguf"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct", backend="llama.cpp")
    with pytest.raises(ValueError, match="n_threads"):
        load_llama(find_course_gguf(), n_threads=0)


def test_a_prompt_longer_than_the_context_is_refused():
    llama = load_llama(find_course_gguf(), n_ctx=64)
    lm = as_language_model(llama)
    with pytest.raises(ValueError, match="n_ctx=64"):
        greedy(lm, list(range(100, 170)), max_new_tokens=2)


# --- servers on llama.cpp ---------------------------------------------------------------


def test_the_course_server_runs_on_llama_cpp(llama_model):
    from openai import OpenAI

    from llmsforme.server import MODEL_ID, start_server

    llama, tokenizer = llama_model
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with start_server(llama, tokenizer) as server:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, max_tokens=20)
        assert reply.choices[0].message.content == chat(llama, tokenizer, messages, max_new_tokens=20)[-1]["content"]
        import httpx2 as httpx

        tags = httpx.get(server.base_url.removesuffix("/v1") + "/api/tags").json()
        assert tags["models"][0]["details"]["format"] == "gguf"


def test_the_openai_client_against_llama_cpps_own_server(llama_model):
    """The same client code against llama.cpp's server: with the same settings, the same reply."""
    import socket
    import subprocess
    import sys
    import time

    import openai
    from openai import OpenAI

    llama, tokenizer = llama_model
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(find_course_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "2", "--n_ctx", "8192", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
                time.sleep(0.2)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        # llama-cpp-python's server applies a repetition penalty of 1.1 unless told otherwise.
        response = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, max_tokens=20, extra_body={"repeat_penalty": 1.0}
        )
        assert response.choices[0].message.content == chat(llama, tokenizer, messages, max_new_tokens=20)[-1]["content"]
        assert response.usage.prompt_tokens == len(chat_prompt(tokenizer, messages).ids)
    finally:
        process.terminate()
        process.wait(30)
