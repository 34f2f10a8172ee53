"""Figures that prose pages state, computed here so that a wrong number fails.

Notebook pages compute their numbers in their own cells; a Markdown page
cannot, so the numbers it takes from code are checked in this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

ROOT = Path(__file__).resolve().parents[1]


def parameter_count(model_class, config) -> int:
    """Parameters of a model built from ``config``, on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def test_gpt_series_page_counts_gpt1_and_gpt2_from_their_configurations():
    page = (ROOT / "docs" / "part-1" / "gpt-series.md").read_text()
    gpt1 = OpenAIGPTConfig()  # transformers' defaults are GPT-1's published shape
    assert (gpt1.n_layer, gpt1.n_embd, gpt1.vocab_size, gpt1.n_positions) == (12, 768, 40478, 512)
    gpt2 = GPT2Config()  # the smallest GPT-2
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.vocab_size, gpt2.n_positions) == (12, 768, 50257, 1024)
    for counted in (parameter_count(OpenAIGPTLMHeadModel, gpt1), parameter_count(GPT2LMHeadModel, gpt2)):
        assert f"{counted / 1e6:.1f} million" in page, counted
    assert "40,478" in page and "50,257" in page and "1,024 positions" in page
