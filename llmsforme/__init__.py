"""llmsforme: the package behind the course.

The course model, a small language-model interface, logits processors,
decoding strategies, chat templates and plots, written to be read.
"""

from .chat import chat, encode_chat, render_chat, validate_messages
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
    "chat",
    "encode_chat",
    "greedy",
    "load_model",
    "next_token_table",
    "render_chat",
    "sample",
    "validate_messages",
]
