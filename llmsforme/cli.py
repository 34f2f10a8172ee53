"""The ``llmsforme`` command line: generate text, look at next-token tables, chat.

Examples::

    llmsforme generate "The rain in Spain" --strategy beam --num-beams 4
    llmsforme generate "Once upon a time" --strategy sample --temperature 0.7 --top-p 0.9 --seed 1
    llmsforme next "The rain in Spain falls mainly in the" --top 10 --top-k 5 --top-p 0.8
    echo "What is rain?" | llmsforme chat --system "Answer in one sentence." --max-new-tokens 60
    llmsforme serve --port 8000          # OpenAI-compatible API at http://127.0.0.1:8000/v1

Taught in: [Next-token probabilities](../part-1/generating-text.ipynb#on-the-command-line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser", "format_next_token_table"]


def _model(args: argparse.Namespace) -> Any:
    from .lm import HFLanguageModel
    from .model_source import load_model

    return HFLanguageModel(*load_model(args.model))


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="local folder or hub id (default: the course model, offline)"
    )


def format_next_token_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render :func:`~llmsforme.decoding.next_token_table` rows as a text table.

    Example:
        >>> print(format_next_token_table([{"rank": 1, "token": " plain", "probability": 0.5,
        ...     "cumulative": 0.5, "top_k": True, "top_p": True}]))
        rank  token       probability  cumulative  top-k  top-p
           1  ' plain'         0.5000      0.5000    yes    yes

    Taught in: [Next-token probabilities](../part-1/generating-text.ipynb#on-the-command-line).
    """
    lines = [f"{'rank':>4}  {'token':<10}  {'probability':>11}  {'cumulative':>10}  {'top-k':>5}  {'top-p':>5}"]
    for row in rows:
        lines.append(
            f"{row['rank']:>4}  {row['token']!r:<10}  {row['probability']:>11.4f}  {row['cumulative']:>10.4f}  "
            f"{'yes' if row['top_k'] else 'no':>5}  {'yes' if row['top_p'] else 'no':>5}"
        )
    return "\n".join(lines)


def _generate(args: argparse.Namespace) -> int:
    from . import decoding

    lm = _model(args)
    common = {"max_new_tokens": args.max_new_tokens}
    if args.strategy == "greedy":
        result = decoding.greedy(lm, args.prompt, **common)
    elif args.strategy == "beam":
        result = decoding.beam_search(
            lm,
            args.prompt,
            num_beams=args.num_beams,
            length_penalty=args.length_penalty,
            num_return_sequences=args.num_return_sequences,
            **common,
        )
    else:
        result = decoding.sample(
            lm,
            args.prompt,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            **common,
        )
    for text, score in zip(result.texts, result.scores):
        prefix = f"[{score:.4f}] " if args.strategy == "beam" and len(result.texts) > 1 else ""
        print(prefix + args.prompt + text)
    return 0


def _next(args: argparse.Namespace) -> int:
    from .decoding import next_token_table

    rows = next_token_table(
        _model(args), args.prompt, top=args.top, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p
    )
    print(format_next_token_table(rows))
    return 0


def _chat(args: argparse.Namespace) -> int:
    """Read user lines from stdin until EOF or /exit; stream each reply to stdout."""
    import torch

    from .chat import chat, detect_template

    lm = _model(args)
    template = detect_template(lm.tokenizer)
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    if any(value is not None for value in (*sampling.values(), args.seed)):
        strategy = "sample"
        options = {name: value for name, value in sampling.items() if value is not None}
        if args.seed is not None:
            torch.manual_seed(args.seed)  # once, so that each turn draws new numbers
    else:
        strategy, options = "greedy", {}
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\r\n")})
        messages = chat(
            lm,
            lm.tokenizer,
            messages,
            strategy=strategy,
            template=template,
            max_new_tokens=args.max_new_tokens,
            on_text=lambda text: print(text, end="", flush=True),
            **options,
        )
        print(flush=True)


def _serve(args: argparse.Namespace) -> int:
    """Serve the model with OpenAI's API until Ctrl+C."""
    from .server import serve

    model, tokenizer = (None, None)
    options = {}
    if args.threads is not None:
        if args.backend == "llama.cpp":
            options["n_threads"] = args.threads
        else:
            import torch

            torch.set_num_threads(args.threads)
    if args.model is not None or args.backend != "transformers":
        from .model_source import load_model

        model, tokenizer = load_model(args.model, backend=args.backend, **options)
    api_key = args.api_key
    if args.api_key_env:
        import os

        api_key = os.environ.get(args.api_key_env, "").strip()
        if not api_key:
            # A server meant to need a key must not start without one.
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    try:
        serve(
            model,
            tokenizer,
            host=args.host,
            port=args.port,
            api_key=api_key,
            max_tokens_limit=args.max_tokens_limit,
            rate_limit=args.rate_limit,
            # Images need the course model in transformers (inputs_embeds).
            vision=args.vision and args.backend == "transformers" and args.model is None,
            max_batch=None if args.one_at_a_time else args.max_batch,
        )
    except KeyboardInterrupt:
        pass
    return 0


def _ask(args: argparse.Namespace) -> int:
    """Answer a question from the course's pages, then list the sections used."""
    from .apps.ask import Retriever, load_corpus, load_glossary, open_index
    from .apps.ask.answer import context_messages, generate_answer
    from .model_source import cache_root

    if args.question is None and not (args.build or args.serve):
        raise ValueError("ask needs a question (or --build to build the index, --serve for the web page)")

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    folder = cache_root() / "ask-index"
    chunks, terms = load_corpus(), load_glossary()
    if args.build:
        from .apps.ask import build_index

        build_index(chunks, folder, terms=terms, on_progress=note)
        if args.question is None and not args.serve:
            return 0
    index = open_index(folder, chunks, terms=terms, on_progress=note)
    if args.serve:
        return _ask_serve(args, index)
    with Retriever(index) as retriever:
        hits = retriever.search(args.question, k=args.k, method=args.method)
    if args.sources_only:
        for hit in hits:
            print(hit.chunk.url)
        return 0
    if args.base_url:
        messages, used = context_messages(args.question, hits)
        options = {"base_url": args.base_url, "model_name": args.model_name,
                   "api_key": os.environ.get("OPENAI_API_KEY")}
    else:
        from .model_source import load_model

        model, tokenizer = load_model(progress=False)
        messages, used = context_messages(args.question, hits, count_tokens=lambda text: len(tokenizer(text).input_ids))
        options = {"model": model, "tokenizer": tokenizer}
    answer = generate_answer(messages, used, max_new_tokens=args.max_new_tokens,
                             on_text=lambda text: print(text, end="", flush=True), **options)
    print("\n\nSources (answers from a small model are drafts: check them here):")
    for url in answer.sources:
        print(url)
    return 0


def _ask_serve(args: argparse.Namespace, index: Any) -> int:
    """``llmsforme ask --serve``: the web page, on this machine only unless --host says otherwise."""
    from .apps.ask import Retriever
    from .apps.ask.answer import generate_answer
    from .apps.ask.web import create_ask_app
    from .server import serve_app

    count_tokens = None  # a server's tokenizer is unknown here: about 4 characters a token
    if args.base_url:
        options = {"base_url": args.base_url, "model_name": args.model_name, "api_key": os.environ.get("OPENAI_API_KEY")}
    else:
        from .model_source import load_model

        model, tokenizer = load_model(progress=False)
        options = {"model": model, "tokenizer": tokenizer}
        count_tokens = lambda text: len(tokenizer(text).input_ids)  # noqa: E731
    if args.log_questions:  # off by default: questions can be private
        handler = logging.FileHandler(args.log_questions, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger("llmsforme.ask").addHandler(handler)
        logging.getLogger("llmsforme.ask").setLevel(logging.INFO)

    def generate(messages: Any, used: Any, on_text: Any) -> Any:
        return generate_answer(messages, used, max_new_tokens=args.max_new_tokens, on_text=on_text, **options)

    with Retriever(index) as retriever:
        try:
            app = create_ask_app(retriever, generate, k=args.k, count_tokens=count_tokens,
                                 log_questions=bool(args.log_questions))
            serve_app(app, host=args.host, port=args.port,
                      name="Ask the course")
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmsforme", description="The llmsforme course on the command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="continue a prompt")
    generate.add_argument("prompt")
    generate.add_argument("--strategy", choices=["greedy", "beam", "sample"], default="greedy")
    generate.add_argument("--max-new-tokens", type=int, default=30)
    generate.add_argument("--num-beams", type=int, default=4)
    generate.add_argument("--length-penalty", type=float, default=1.0)
    generate.add_argument("--num-return-sequences", type=int, default=1)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0, help="0 = off")
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=None)
    _add_model_option(generate)
    generate.set_defaults(run=_generate)

    nxt = commands.add_parser("next", help="table of the most likely next tokens")
    nxt.add_argument("prompt")
    nxt.add_argument("--top", type=int, default=10)
    nxt.add_argument("--temperature", type=float, default=1.0)
    nxt.add_argument("--top-k", type=int, default=0, help="0 = off")
    nxt.add_argument("--top-p", type=float, default=1.0)
    _add_model_option(nxt)
    nxt.set_defaults(run=_next)

    talk = commands.add_parser(
        "chat", help="chat with the model: one user message per line of stdin, until EOF or /exit"
    )
    talk.add_argument("--system", default=None, help="system message (default: the model's own, if any)")
    talk.add_argument("--max-new-tokens", type=int, default=256)
    talk.add_argument(
        "--temperature", type=float, default=None, help="sample (greedy unless a sampling option is given)"
    )
    talk.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    talk.add_argument("--top-p", type=float, default=None, help="sample from the top-p probability mass")
    talk.add_argument("--seed", type=int, default=None, help="sample, repeatably")
    _add_model_option(talk)
    talk.set_defaults(run=_chat)

    server = commands.add_parser(
        "serve", help="serve the model with OpenAI's Chat Completions API (for the openai client)"
    )
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    server.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    server.add_argument("--api-key", default=None, help="require this key (visible in the process list: prefer --api-key-env)")
    server.add_argument(
        "--api-key-env", default=None, metavar="VARIABLE", help="require the key stored in this environment variable"
    )
    server.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens, and the default")
    server.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="answer 429 beyond N requests per minute"
    )
    server.add_argument(
        "--backend", choices=["transformers", "llama.cpp"], default="transformers",
        help="run the model with PyTorch (default) or llama.cpp on its GGUF file",
    )
    server.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N",
        help="CPU threads for the model (default: the runtime's choice; llama.cpp takes half the cores, "
        "which leaves the server a core of its own)",
    )
    server.add_argument(
        "--no-vision", dest="vision", action="store_false",
        help="serve text only (by default the course model in transformers also reads images, "
        "as smollm2-135m-instruct-vision)",
    )
    server.add_argument(
        "--max-batch", type=_positive_int, default=8, metavar="N",
        help="most requests that share one forward pass (continuous batching; default 8)",
    )
    server.add_argument(
        "--one-at-a-time", action="store_true",
        help="run requests one after another instead of batching them (for comparison; llama.cpp always does)",
    )
    _add_model_option(server)
    server.set_defaults(run=_serve)

    ask = commands.add_parser("ask", help="ask the course a question (retrieval from its pages, then an answer)")
    ask.add_argument("question", nargs="?", help='e.g. "How does top-p differ from top-k?"')
    ask.add_argument("--build", action="store_true", help="(re)build the search index first")
    ask.add_argument("--k", type=_positive_int, default=3, help="sections to retrieve (default 3)")
    ask.add_argument("--method", choices=["vector", "keyword", "hybrid"], default="hybrid",
                     help="how to retrieve (default: hybrid, the best on the course's paraphrased questions)")
    ask.add_argument("--sources-only", action="store_true", help="list the sections found, generate nothing")
    ask.add_argument("--base-url", default=None,
                     help="generate on this OpenAI-compatible server instead (key: $OPENAI_API_KEY)")
    ask.add_argument("--model-name", default="smollm2-135m-instruct", help="the model to ask on --base-url")
    ask.add_argument("--max-new-tokens", type=_positive_int, default=160)
    ask.add_argument("--serve", action="store_true", help="serve the web page instead of answering once")
    ask.add_argument("--host", default="127.0.0.1", help="with --serve: address to listen on (default: this machine only)")
    ask.add_argument("--port", type=int, default=8001, help="with --serve: the port (0 picks a free one)")
    ask.add_argument("--log-questions", metavar="FILE", default=None,
                     help="with --serve: append each question to FILE (off by default: questions stay private)")
    ask.set_defaults(run=_ask)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"llmsforme: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
