"""llmsforme: the package behind the course.

The course model, a small language-model interface, logits processors,
decoding strategies, chat templates and plots, written to be read.
"""

from .decoding import Generation, beam_search, greedy, next_token_table, sample
from .lm import HFLanguageModel, LanguageModel, ToyModel, as_language_model
from .model_source import load_model

__version__ = "0.1.0"

__all__ = [
    "Generation",
    "HFLanguageModel",
    "LanguageModel",
    "ToyModel",
    "as_language_model",
    "beam_search",
    "greedy",
    "load_model",
    "next_token_table",
    "sample",
]
