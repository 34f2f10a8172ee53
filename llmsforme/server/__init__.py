"""An OpenAI-compatible server for the course model, built on the package's own decoding.

Readers learn OpenAI's Chat Completions API by running it, with the official
``openai`` client and no account, key or network: the client talks to this
server, which renders the messages with the course's chat template and
generates with :func:`~llmsforme.decoding.greedy` or
:func:`~llmsforme.decoding.sample`. ``temperature`` and ``top_p`` are
therefore exactly the functions that Part 1 teaches.

* :func:`start_server` runs it in the background (notebooks, tests);
* ``llmsforme serve`` runs it in a terminal (:func:`serve`);
* :func:`create_app` is the FastAPI application, :class:`Engine` the
  generation queue behind it.

With ``vision=True`` (the default of ``llmsforme serve``) it also serves
:data:`VISION_MODEL_ID`, the course model reading an image through the
digits vision-language model, on the same weights.

Layers: this module sits above chat and decoding and below the apps; the
algorithms never import it.

Taught in: [Your first call](../part-3/first-call.ipynb).
"""

from .app import DEFAULT_MAX_TOKENS, MAX_BODY_BYTES, RateLimit, create_app
from .engine import Engine, Settings, StopText
from .errors import APIError
from .openai_api import MAX_N, MODEL_ID, UNSUPPORTED, VISION_MODEL_ID
from .running import BackgroundServer, serve, serve_app, start_app, start_server

__all__ = [
    "APIError",
    "BackgroundServer",
    "DEFAULT_MAX_TOKENS",
    "Engine",
    "MAX_BODY_BYTES",
    "MAX_N",
    "MODEL_ID",
    "RateLimit",
    "Settings",
    "StopText",
    "UNSUPPORTED",
    "VISION_MODEL_ID",
    "create_app",
    "serve",
    "serve_app",
    "start_app",
    "start_server",
]
