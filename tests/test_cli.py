"""The command line gives what the package functions give."""

from __future__ import annotations

import pytest

from llmsforme import beam_search, cli, greedy, next_token_table, sample

PROMPT = "The rain in Spain falls mainly in the"


@pytest.fixture
def fast_model(monkeypatch, course_lm):
    """Reuse the session's model instead of loading it in every command."""
    monkeypatch.setattr(cli, "_model", lambda args: course_lm)
    return course_lm


def test_next_prints_the_table(fast_model, capsys):
    assert cli.main(["next", PROMPT, "--top", "5", "--top-k", "3", "--top-p", "0.5"]) == 0
    expected = cli.format_next_token_table(next_token_table(fast_model, PROMPT, top=5, top_k=3, top_p=0.5))
    assert capsys.readouterr().out.strip() == expected.strip()


@pytest.mark.parametrize(
    "argv,reference",
    [
        (["--strategy", "greedy"], lambda lm: greedy(lm, PROMPT, max_new_tokens=8)),
        (["--strategy", "beam", "--num-beams", "3"], lambda lm: beam_search(lm, PROMPT, num_beams=3, max_new_tokens=8)),
        (
            ["--strategy", "sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"],
            lambda lm: sample(lm, PROMPT, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=8),
        ),
    ],
)
def test_generate_matches_the_functions(fast_model, capsys, argv, reference):
    assert cli.main(["generate", PROMPT, "--max-new-tokens", "8", *argv]) == 0
    assert capsys.readouterr().out.strip() == (PROMPT + reference(fast_model).text).strip()


def test_bad_value_is_a_clear_error(fast_model, capsys):
    assert cli.main(["generate", PROMPT, "--strategy", "sample", "--temperature", "0"]) == 2
    assert "temperature must be a finite number > 0" in capsys.readouterr().err


def test_unknown_strategy_is_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", PROMPT, "--strategy", "magic"])
    assert "invalid choice" in capsys.readouterr().err


def test_real_model_loading(capsys, course_model):
    """Without the shortcut: the command loads the course model itself."""
    assert cli.main(["next", PROMPT, "--top", "3"]) == 0
    rows = next_token_table(course_model[0], PROMPT, tokenizer=course_model[1], top=3)
    assert capsys.readouterr().out.strip() == cli.format_next_token_table(rows).strip()


@pytest.mark.parametrize(
    ("argv", "vision"),
    [
        (["serve"], True),
        (["serve", "--no-vision"], False),
        (["serve", "--backend", "llama.cpp"], False),  # images need the model in transformers
    ],
)
def test_serve_turns_vision_on_for_the_course_model_in_transformers(monkeypatch, argv, vision):
    import llmsforme.model_source
    import llmsforme.server

    seen = {}
    monkeypatch.setattr(llmsforme.server, "serve", lambda *args, **options: seen.update(options))
    monkeypatch.setattr(llmsforme.model_source, "load_model", lambda *args, **options: (None, None))
    assert cli.main(argv) == 0
    assert seen["vision"] is vision


@pytest.mark.parametrize(
    ("argv", "max_batch"),
    [
        (["serve"], 8),
        (["serve", "--max-batch", "3"], 3),
        (["serve", "--one-at-a-time"], None),
    ],
)
def test_serve_batches_by_default(monkeypatch, argv, max_batch):
    import llmsforme.server
    from llmsforme.server.engine import DEFAULT_MAX_BATCH

    seen = {}
    monkeypatch.setattr(llmsforme.server, "serve", lambda *args, **options: seen.update(options))
    assert cli.main(argv) == 0
    assert seen["max_batch"] == max_batch
    assert DEFAULT_MAX_BATCH == 8  # the CLI's default names the same number


def test_serve_rejects_a_batch_of_zero(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--max-batch", "0"])
    assert "--max-batch" in capsys.readouterr().err
