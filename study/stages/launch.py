"""Run one DVC stage: its notebook through papermill, with its output streamed to the terminal.

dvc.yaml's commands name only the stage kind (``python -m study.stages.launch prune``). DVC tells the
command which stage it runs in ``$DVC_STAGE`` (e.g. ``prune@lenet5-mnist-irregular``); this module finds
that name among the stages ``params.yaml`` defines and passes the notebook its identity (baseline,
scheme, bits) as papermill parameters. So no parameter value is ever pasted into a shell command, and
``params.yaml`` is validated in full before any work starts.

By hand: ``python -m study.stages.launch prune --stage prune@lenet5-mnist-irregular`` (writes the
pipeline's outputs, like ``dvc repro``; to explore without touching them, run the notebook itself).

Distributed: with ``runtime.processes`` > 1 a training stage (train, prune, magnitude, quantize) starts
itself again under ``torchrun --standalone --nproc_per_node=N``; every process runs the notebook (the
kernel inherits torchrun's environment and joins the process group), rank 0's executed notebook is the
one kept. Across machines, start the same command under torchrun on every node yourself (README).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from study import paths
from study.core.params import Params, ParamsError, load_params

# Stages that train, and so may run on several processes; the others read checkpoints and count.
DISTRIBUTED_KINDS = frozenset({"train", "prune", "magnitude", "quantize", "quantize_dense"})
NOTEBOOKS = {"train": "train", "prune": "prune", "magnitude": "magnitude", "quantize": "quantize",
             "quantize_dense": "quantize", "evaluate": "evaluate", "weights": "weights", "storage": "storage",
             "energy": "energy", "latency": "latency", "report": "report"}


def stage_items(params: Params) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every stage dvc.yaml defines for these params: name -> (kind, output name, notebook parameters)."""
    compare = params.compare
    items: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for b in params.baselines:
        items[f"train@{b}"] = ("train", b, {"baseline": b})
    for b in compare.baselines:
        for s in compare.schemes:
            items[f"prune@{b}-{s}"] = ("prune", f"{b}-{s}", {"baseline": b, "scheme": s})
            for bits in compare.weight_bits:
                items[f"quantize@{b}-{s}-{bits}"] = ("quantize", f"{b}-{s}-{bits}", {"baseline": b, "scheme": s, "bits": bits})
        for bits in compare.weight_bits:
            items[f"quantize_dense@{b}-{bits}"] = ("quantize", f"{b}-dense-{bits}", {"baseline": b, "scheme": "dense", "bits": bits})
        for kind in ("magnitude", "evaluate", "weights", "storage", "energy", "latency"):
            items[f"{kind}@{b}"] = (kind, b, {"baseline": b})
    items["report"] = ("report", "report", {})
    return items


class _CellOutput(logging.Filter):
    """Keep what the notebook prints; drop papermill's own per-cell chatter."""

    CHATTER = ("Executing", "Input Notebook", "Output Notebook", "Ending Cell", "Working directory")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # papermill logs each output chunk with its trailing newline: strip it, drop empty chunks
        record.msg, record.args = message.rstrip("\n"), ()
        return bool(record.msg.strip()) and not message.startswith(self.CHATTER)


def execute(kind: str, stage: str, params_file: str = "params.yaml") -> Path:
    """Run the notebook of ``stage`` (a DVC stage name of kind ``kind``); return the executed notebook's path."""
    import papermill

    params = load_params(paths.from_root(params_file))
    items = stage_items(params)
    if stage not in items or stage.split("@")[0] != kind:
        valid = sorted(n for n in items if n.split("@")[0] == kind)
        raise ParamsError(f"stage {stage!r} is not a {kind} stage of {params_file}; valid: {valid}")
    _, name, identity = items[stage]
    notebook = paths.REPO_ROOT / "notebooks" / f"{NOTEBOOKS[kind]}.ipynb"
    folder = "runs" if kind == "report" else f"runs/{NOTEBOOKS[kind]}"
    executed = paths.REPO_ROOT / folder / f"{name}.ipynb"
    rank = int(os.environ.get("RANK", "0"))
    scratch = tempfile.TemporaryDirectory(prefix=f"rank{rank}-") if rank != 0 else None
    if scratch is not None:  # every rank runs the notebook; rank 0's record is the one kept
        executed = Path(scratch.name) / executed.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_CellOutput())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters={**identity, "params_file": params_file, "out_root": "."},
            cwd=str(notebook.parent), log_output=True, progress_bar=False,
        )
    finally:
        logger.removeHandler(handler)
        if scratch is not None:
            scratch.cleanup()
    if kind == "report":
        export_html(executed, paths.REPO_ROOT / "report" / "index.html")
    return executed


def export_html(executed: Path, target: Path) -> None:
    """The executed report as one HTML page without code cells (what a reader opens)."""
    from nbconvert import HTMLExporter

    from study.core.artifacts import atomic_write_text

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_filename(str(executed))
    atomic_write_text(target, body)


def torchrun_command(kind: str, stage: str, params_file: str, processes: int) -> list[str]:
    """This launch again, under torchrun on this machine (``--standalone``: its own rendezvous)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "study.stages.launch", kind, "--stage", stage, "--params", params_file]


def _needs_torchrun(kind: str, params_file: str) -> int:
    """The processes to start for this stage when torchrun has not started us yet; 0 to run here."""
    if kind not in DISTRIBUTED_KINDS or "LOCAL_RANK" in os.environ:
        return 0
    processes = load_params(paths.from_root(params_file)).runtime.processes
    return processes if processes > 1 else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.stages.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(NOTEBOOKS), help="the stage kind (dvc.yaml's stage name before '@')")
    parser.add_argument("--stage", default=os.environ.get("DVC_STAGE"),
                        help="the full stage name, e.g. prune@lenet5-mnist-irregular (default: $DVC_STAGE, set by DVC)")
    parser.add_argument("--params", default="params.yaml", help="parameters file, relative to the repository root")
    args = parser.parse_args(argv)
    stage = args.stage or (args.kind if args.kind == "report" else None)
    if not stage:
        parser.error("no stage name: pass --stage <kind>@<item> (DVC sets $DVC_STAGE)")
    try:
        processes = _needs_torchrun(args.kind, args.params)
        if processes:
            return subprocess.call(torchrun_command(args.kind, stage, args.params, processes))
        execute(args.kind, stage, args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
