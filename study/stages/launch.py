"""Run one DVC stage: its notebook through papermill, with its output streamed to the terminal.

dvc.yaml's commands name only the stage kind (``python -m study.stages.launch prune``). DVC tells the
command which stage it runs in ``$DVC_STAGE`` (e.g. ``prune@lenet5-mnist-irregular``); this module finds
that name among the stages ``params.yaml`` defines and passes the notebook its identity (baseline,
scheme, bits) as papermill parameters. So no parameter value is ever pasted into a shell command. The
launcher reads only the stage names from ``params.yaml``; the notebook's first step validates it in full
before any work starts, and an invalid file ends the stage with the validation's message (exit status 2).

By hand: ``python -m study.stages.launch prune --stage prune@lenet5-mnist-irregular`` (writes the
pipeline's outputs, like ``dvc repro``; to explore without touching them, run the notebook itself).

Distributed: with ``runtime.processes`` > 1 a training stage (train, prune, magnitude, l1filter, quantize) starts
itself again under ``torchrun --standalone --nproc_per_node=N``; every process runs the notebook (the
kernel inherits torchrun's environment and joins the process group), rank 0's executed notebook is the
one kept. Across machines, start the same command under torchrun on every node yourself (docs/paper-scale.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from study import paths
from study.contract import NM_SCHEME
from study.core.errors import ParamsError

if TYPE_CHECKING:
    from study.core.params import Params

# Stages that train, and so may run on several processes; the others read checkpoints and count.
DISTRIBUTED_KINDS = frozenset({"train", "prune", "magnitude", "l1filter", "quantize", "quantize_dense", "seeds"})
NOTEBOOKS = {"train": "train", "prune": "prune", "magnitude": "magnitude", "l1filter": "l1filter", "quantize": "quantize",
             "quantize_dense": "quantize", "evaluate": "evaluate", "weights": "weights", "storage": "storage",
             "energy": "energy", "latency": "latency", "seeds": "seeds", "frontier": "frontier", "verdicts": "verdicts", "asp": "asp",
             "export": "export", "report": "report"}


# The stage every other one depends on: params.yaml checked in full, before DVC removes any stage's outputs (it
# does so right before a stage's command runs, so a bad value caught inside a stage would cost its last good
# outputs). Its one output never changes while the file is valid, so passing it reruns nothing downstream.
VALIDATE = "validate"
VALID_STAMP = "results/params.valid"
VALID_TEXT = "params.yaml passed the full check (study.core.params) before any stage ran\n"

StageItems = dict[str, tuple[str, str, dict[str, Any]]]
# Errors that say what to fix in params.yaml, the data or a checkpoint: the launcher prints their message alone (the
# traceback stays in the notebook as far as it ran, under tmp/running/).
USER_ERRORS = frozenset({"ParamsError", "ExecutionError", "DataError", "CheckpointError"})


def stage_items(params: Params) -> StageItems:
    """Every stage dvc.yaml defines for these params: name -> (kind, output name, notebook parameters)."""
    compare = params.compare
    return _items(list(params.baselines), compare.baselines, compare.schemes, compare.weight_bits)


def _items(trained: list[str], compared: list[str], schemes: list[str], weight_bits: list[int]) -> StageItems:
    items: StageItems = {}
    for b in trained:
        items[f"train@{b}"] = ("train", b, {"baseline": b})
    for b in compared:
        for s in schemes:
            items[f"prune@{b}-{s}"] = ("prune", paths.item(b, s), {"baseline": b, "scheme": s})
            for bits in weight_bits:
                items[f"quantize@{b}-{s}-{bits}"] = ("quantize", paths.item(b, s, bits), {"baseline": b, "scheme": s, "bits": bits})
        for bits in weight_bits:
            items[f"quantize_dense@{b}-{bits}"] = ("quantize", paths.item(b, "dense", bits), {"baseline": b, "scheme": "dense", "bits": bits})
        if NM_SCHEME in schemes:  # the N:M side's baseline nobody here wrote (dvc.yaml: compare.nm_baselines)
            items[f"asp@{b}"] = ("asp", b, {"baseline": b})  # before the stages that read its record, in run order
        for kind in ("magnitude", "l1filter", "evaluate", "weights", "storage", "energy", "latency", "seeds", "frontier",
                     "verdicts", "export"):
            items[f"{kind}@{b}"] = (kind, b, {"baseline": b})
    items["report"] = ("report", "report", {})
    return items


def declared(params_file: str) -> tuple[StageItems, int]:
    """The stages ``params_file`` defines and its ``runtime.processes``, read without validating the file.

    Validating builds every model (torch: ~3 s of every stage's start), and the notebook's first step
    validates in full anyway. A file too broken to read the names from is validated here, for its message.
    """
    path = paths.from_root(params_file)
    try:
        raw = yaml.safe_load(path.read_text())
        compare = raw["compare"]
        items = _items(list(raw["baselines"]), list(compare["baselines"]), list(compare["schemes"]),
                       list(compare["weight_bits"]))
        processes = int((raw.get("runtime") or {}).get("processes", 1))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        from study.core.params import load_params

        load_params(path)  # raises a ParamsError that names what is wrong
        raise
    return items, processes


class _CellOutput(logging.Filter):
    """Keep what the notebook prints; drop papermill's own per-cell chatter, and the bare reprs it logs for displayed
    objects that have no text (``<IPython.core.display.Image object>``: one line per table and figure of the report)."""

    CHATTER = ("Executing", "Input Notebook", "Output Notebook", "Ending Cell", "Working directory")
    BARE_REPR = re.compile(r"<[\w.]+ (object|at 0x[0-9a-f]+)>")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # papermill logs each output chunk with its trailing newline: strip it, drop empty chunks
        record.msg, record.args = message.rstrip("\n"), ()
        return (bool(record.msg.strip()) and not message.startswith(self.CHATTER)
                and not self.BARE_REPR.fullmatch(record.msg.strip()))


def _skip_iri_grammar() -> None:
    """Call before the first import of nbformat (papermill, nbconvert): jsonschema, which nbformat imports,
    compiles an RFC 3987 grammar with lark at import whenever the optional rfc3987-syntax package is
    installed (jupyter-events pulls it in): ~2.4 s of every stage, for an "iri" format check that no
    notebook schema uses. Without the package jsonschema skips that check."""
    sys.modules.setdefault("rfc3987_syntax", None)  # a None entry makes `import rfc3987_syntax` fail at once


def kernel_imports_this_checkout(root: Path = paths.REPO_ROOT) -> None:
    """Make the notebook's kernel import ``study`` from ``root``, the checkout this launcher runs in, not from
    wherever the package is installed. DVC runs ``dvc exp run --temp`` and queued experiments in a temporary copy
    of the repository (the working directory of the stage's command, which ``python -m`` imports from) and even
    points ``$DVC_ROOT`` at the workspace there; the kernel starts in ``notebooks/`` and, without this, would
    import the editable install, whose paths and params.yaml are the workspace's."""
    existing = os.environ.get("PYTHONPATH", "")
    entries = [str(root), *(p for p in existing.split(os.pathsep) if p and Path(p).resolve() != root.resolve())]
    os.environ["PYTHONPATH"] = os.pathsep.join(entries)


def run_notebook(notebook: Path, executed: Path, parameters: dict[str, Any], **options: Any) -> None:
    """``notebook`` through papermill into ``executed``, in a kernel that dies with this process and talks over
    Unix sockets (:mod:`study.stages.kernel`), with the two start-up costs of a stage cut: the unused grammar
    (:func:`_skip_iri_grammar`), and the kernel's shutdown, stopped at once after the last cell instead of asked
    and waited for (~1 s): every output a stage writes is complete (atomic) before its cell returns.
    """
    _skip_iri_grammar()
    import papermill

    from study.stages.kernel import StageKernelManager

    papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(notebook.parent),
                               progress_bar=False, shutdown_kernel="immediate",
                               kernel_manager_class=StageKernelManager, **options)


def validate(params_file: str = "params.yaml") -> Path:
    """The ``validate`` stage: the full check of ``params_file`` (a ParamsError names the key), then the stamp."""
    from study.core.artifacts import atomic_write_text
    from study.core.params import load_params

    params = load_params(paths.from_root(params_file))
    stamp = paths.REPO_ROOT / VALID_STAMP
    atomic_write_text(stamp, VALID_TEXT)
    print(f"{params_file}: valid ({len(params.baselines)} baseline(s): {', '.join(params.baselines)})")
    return stamp


def execute(kind: str, stage: str, params_file: str = "params.yaml") -> Path:
    """Run the notebook of ``stage`` (a DVC stage name of kind ``kind``); return the executed notebook's path."""
    items, _ = declared(params_file)
    if stage not in items or stage.split("@")[0] != kind:
        valid = sorted(n for n in items if n.split("@")[0] == kind)
        raise ParamsError(f"stage {stage!r} is not a {kind} stage of {params_file}; valid: {valid}")
    _, name, identity = items[stage]
    notebook = paths.REPO_ROOT / "notebooks" / f"{NOTEBOOKS[kind]}.ipynb"
    folder = "runs" if kind == "report" else f"runs/{NOTEBOOKS[kind]}"
    executed = paths.REPO_ROOT / folder / f"{name}.ipynb"
    # papermill writes the notebook after every cell: into tmp/running/ (watch it there), moved over the
    # stage's record only when every cell ran, so a failed run leaves the last good record in place
    running = paths.REPO_ROOT / "tmp" / "running" / folder / f"{name}.ipynb"
    rank = int(os.environ.get("RANK", "0"))
    scratch = tempfile.TemporaryDirectory(prefix=f"rank{rank}-") if rank != 0 else None
    if scratch is not None:  # every rank runs the notebook; rank 0's record is the one kept
        executed = running = Path(scratch.name) / executed.name
    running.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_CellOutput())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    if rank == 0:  # every rank runs the notebook; one prints it, as study.progress.line speaks for rank 0 alone
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    kernel_imports_this_checkout()
    try:
        run_notebook(notebook, running, {**identity, "params_file": params_file, "out_root": "."}, log_output=True)
        executed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(running, executed)
    except Exception:
        print(f"{stage} failed; its notebook as far as it ran: {running}", file=sys.stderr)
        raise
    finally:
        logger.removeHandler(handler)
        if scratch is not None:
            scratch.cleanup()
    if kind == "report":
        export_html(executed, paths.REPO_ROOT / "report" / "index.html")
    return executed


def export_html(executed: Path, target: Path) -> None:
    """The executed report as one HTML page without code cells (what a reader opens)."""
    _skip_iri_grammar()
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
    processes = declared(params_file)[1]
    return processes if processes > 1 else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.stages.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted([*NOTEBOOKS, VALIDATE]), help="the stage kind (dvc.yaml's stage name before '@')")
    parser.add_argument("--stage", default=os.environ.get("DVC_STAGE"),
                        help="the full stage name, e.g. prune@lenet5-mnist-irregular (default: $DVC_STAGE, set by DVC)")
    parser.add_argument("--params", default="params.yaml", help="parameters file, relative to the repository root")
    args = parser.parse_args(argv)
    stage = args.stage or (args.kind if args.kind in ("report", VALIDATE) else None)
    if not stage:
        parser.error("no stage name: pass --stage <kind>@<item> (DVC sets $DVC_STAGE)")
    try:
        if args.kind == VALIDATE:
            validate(args.params)
            return 0
        processes = _needs_torchrun(args.kind, args.params)
        if processes:
            return subprocess.call(torchrun_command(args.kind, stage, args.params, processes))
        if "LOCAL_RANK" in os.environ:  # torchrun starts each rank in a session of its own: end with it, as kernels do
            from study.stages.kernel import die_with_parent

            die_with_parent()
        execute(args.kind, stage, args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # papermill's error for a failed cell carries the exception's name and message
        if getattr(exc, "ename", None) in USER_ERRORS:  # a setting or a file to fix: its sentence, not a traceback
            print(f"error: {exc.evalue}", file=sys.stderr)  # type: ignore[attr-defined]
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
