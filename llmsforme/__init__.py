"""llmsforme: the package behind the course.

The course model, a small language-model interface, logits processors,
decoding strategies and chat templates, written to be read; what readers look
at (tables, plots) is in :mod:`llmsforme.display`.
"""

from importlib import metadata as _metadata

from .chat import chat, encode_chat, render_chat, validate_messages
from .decoding import Generation, beam_search, greedy, next_token_table, sample
from .lm import HFLanguageModel, LanguageModel, ToyModel, as_language_model
from .model_source import load_model

try:
    __version__ = _metadata.version("llmsforme")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
