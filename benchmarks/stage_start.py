"""Benchmark: the fixed cost of starting a stage, before and after the launcher's two cuts.

    python benchmarks/stage_start.py [--repeats 3]

Every `dvc repro` stage is `python -m study.stages.launch <kind>`, which runs the stage's notebook in a
fresh Jupyter kernel. On a 2-core machine a tiny stage spent ~18 s there for ~3 s of work, and the study
has 56 stages. This times, each in a fresh interpreter, best of ``--repeats``:

- importing the launcher (it used to validate params.yaml itself, importing torch; now the notebook does);
- importing papermill as it comes, and with the optional rfc3987-syntax package hidden (jsonschema, under
  nbformat, compiles that package's grammar with lark at import);
- a one-cell notebook that imports torch, through papermill as it comes (graceful kernel shutdown) and
  through ``study.stages.launch.run_notebook`` (both cuts);

and prints the seconds and the ratios. Machine noise is large on shared machines: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDE_GRAMMAR = "import sys; sys.modules.setdefault('rfc3987_syntax', None); "
NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [],
               "source": ["import torch\n", "print(torch.ones(3).sum())"]}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def best_of(code: str, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` runs of ``code`` in a fresh interpreter (start-up included)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        notebook, executed = Path(scratch) / "one.ipynb", Path(scratch) / "out.ipynb"
        notebook.write_text(json.dumps(NOTEBOOK))
        plain_run = (f"import papermill; papermill.execute_notebook({str(notebook)!r}, {str(executed)!r}, "
                     "progress_bar=False)")
        launcher_run = (f"from pathlib import Path; from study.stages.launch import run_notebook; "
                        f"run_notebook(Path({str(notebook)!r}), Path({str(executed)!r}), {{}})")
        rows = [
            ("import the launcher (no torch)", best_of("import study.stages.launch", args.repeats),
             best_of("import study.core.params", args.repeats), "vs importing params.yaml's validator"),
            ("import papermill, grammar hidden", best_of(HIDE_GRAMMAR + "import papermill", args.repeats),
             best_of("import papermill", args.repeats), "vs as it comes"),
            ("one-cell torch notebook, run_notebook", best_of(launcher_run, args.repeats),
             best_of(plain_run, args.repeats), "vs papermill as it comes"),
        ]
    print(f"{'what':40s} {'now (s)':>8s} {'before (s)':>10s} {'ratio':>6s}")
    for what, now, before, against in rows:
        print(f"{what:40s} {now:8.2f} {before:10.2f} {before / now:5.1f}x  ({against})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
