"""Run the course's notebooks on a GPU and compare their printed outputs with the stored (CPU) ones.

The stored outputs come from the CPU. ``DEVICE = "auto"`` in each setup cell
puts the model on a GPU when torch sees one; this script checks what that
changes. For each notebook it runs every code cell but the setup cell, in
one Python namespace (no Jupyter kernel needed), with ``DEVICE`` set to
``--device``, and compares what each cell prints with the text the
notebook stores. It reports, per notebook, whether it ran, and how many
cells printed exactly the stored text; the first differing line of each
other cell is kept in the JSON report.

Greedy decoding and beam search should print the same text on a GPU (they
equal ``model.generate`` there, token for token, as long as the GPU's logits
pick the same tokens); sampled text and anything timed may differ. Plots
and HTML tables are not compared.

    .venv/bin/python scripts/gpu_notebooks.py --device cuda --out gpu-report.json examples

Each notebook runs in its own process (a notebook that fails or leaves a
server running cannot disturb the next), with a limit per notebook.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _stored_text(cell: dict[str, Any]) -> str:
    return "".join(
        "".join(output.get("text", ""))
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


def _run_cell(source: str, namespace: dict[str, Any]) -> None:
    """Run a cell as Jupyter would, minus the display of its last expression's value."""
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    body = ast.Module(body=tree.body[:-1] if last else tree.body, type_ignores=[])
    exec(compile(body, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook's own code
    if last is not None:
        eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307


def _first_difference(stored: str, produced: str) -> dict[str, Any]:
    a, b = stored.splitlines(), produced.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return {"line": i + 1, "stored": x[:300], "produced": y[:300]}
    i = min(len(a), len(b))
    return {"line": i + 1, "stored": (a[i] if i < len(a) else "<end>")[:300],
            "produced": (b[i] if i < len(b) else "<end>")[:300]}


def run_one(path: Path, device: str) -> dict[str, Any]:
    """Run one notebook in this process; its report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    setup = "".join(cells[0]["source"])
    package = re.search(r'^PACKAGE = (.+)$', setup, re.MULTILINE)
    source = re.search(r'^SOURCE = (.+)$', setup, re.MULTILINE)
    namespace: dict[str, Any] = {"__name__": "__main__", "DEVICE": device}
    if source and package:  # pages that fetch data on Colab read PACKAGE
        exec(f"SOURCE = {source.group(1)}\nPACKAGE = {package.group(1)}", namespace)  # noqa: S102
    warnings.filterwarnings("ignore")
    os.chdir(path.parent)
    report: dict[str, Any] = {"notebook": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                              "ran": True, "cells": 0, "equal": 0, "differences": [], "error": None}
    started = time.perf_counter()
    for index, cell in enumerate(cells[1:], start=1):
        stored = _stored_text(cell)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                _run_cell("".join(cell["source"]), namespace)
        except Exception as error:  # noqa: BLE001 - reported
            report.update(ran=False, error={"cell": index, "type": type(error).__name__, "message": str(error)[:500]})
            break
        finally:
            plt.close("all")
        if stored or printed.getvalue():
            report["cells"] += 1
            if printed.getvalue() == stored:
                report["equal"] += 1
            else:
                report["differences"].append({"cell": index, **_first_difference(stored, printed.getvalue())})
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device, "device_name": name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders to search")
    parser.add_argument("--device", default="cuda", help='what DEVICE is set to: "cuda", "cpu" or "auto"')
    parser.add_argument("--out", type=Path, help="write the JSON report there")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per notebook")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once (a GPU has room for several)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.paths[0].resolve(), args.device)))
        return 0
    notebooks = sorted(p.resolve() for path in args.paths
                       for p in ([path] if path.suffix == ".ipynb" else path.rglob("*.ipynb"))
                       if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        parser.error("no notebook found")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    def run(path: Path) -> dict[str, Any]:
        try:
            child = subprocess.run([sys.executable, __file__, "--one", "--device", args.device, str(path)],
                                   capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"notebook": str(path), "ran": False, "cells": 0, "equal": 0, "differences": [],
                    "error": {"type": "timeout", "message": f"over {args.timeout} s"}}
        lines = child.stdout.strip().splitlines()
        if child.returncode == 0 and lines:
            return json.loads(lines[-1])
        return {"notebook": str(path), "ran": False, "cells": 0, "equal": 0, "differences": [],
                "error": {"type": "process", "message": child.stderr[-500:]}}

    from concurrent.futures import ThreadPoolExecutor

    reports = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for report in pool.map(run, notebooks):
            reports.append(report)
            status = "ran" if report["ran"] else f"FAILED ({report['error']['type']}: {report['error']['message'][:80]})"
            print(f"{report['notebook']:<45} {status:<10} {report['equal']:>3} of {report['cells']:>3} cells "
                  f"print the stored text", flush=True)
    document = {"environment": _environment(args.device), "notebooks": reports}
    if args.out:
        args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    ran = sum(r["ran"] for r in reports)
    print(f"{ran} of {len(reports)} notebooks ran on {document['environment']['device_name']}")
    return 0 if ran == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())
