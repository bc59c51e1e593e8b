"""The demo study (``make demo``): every stage of the pipeline on a small profile, in about five minutes on
2 cores, under ``demo/``, so a class or a first-time reader sees the whole report without the full run.

What is smaller, and why it is still the same study: LeNet-5 on a seeded sample of MNIST (12,000 training
and 2,000 test images of the real files), few epochs, three or two pruning steps per scheme, two weight
widths, short latency timings. The stage functions, the report and its verdicts are the pipeline's own;
only ``params.yaml``'s values change (written to ``demo/params.yaml``). Every table, figure and the report
page say "demo". Nothing outside ``demo/`` is written, and nothing of the full study is read, so its
outputs and ``dvc.lock`` stay as they are.

Stages run in this one process (each stage's ``run``, as its notebook calls it) rather than as one
notebook kernel per stage: 20 kernel starts would take a third of the budget. The report runs through its
notebook, as in the pipeline, and is exported to ``demo/report/index.html``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from study import paths
from study.contract import NM_SCHEME
from study.core import data
from study.core.params import ParamsError, load_params, read_yaml
from study.progress import phase
from study.stages.launch import stage_items

DEMO_ROOT = "demo"
LABEL = ("DEMO profile (make demo): LeNet-5 on 12,000 MNIST training images, a few epochs per phase, a 1-point "
         "tolerance. Not the study's results: run `make paper` for those.")
TRAIN_IMAGES, TEST_IMAGES, VAL_IMAGES = 12_000, 2_000, 2_000

# The profile: what changes from params.yaml, each value chosen to fit five minutes on 2 cores.
PROFILE: dict[str, Any] = {
    "epochs": 3,  # ~4 s an epoch on 10,000 images: ~97.5% test accuracy
    "tolerance_pp": 1.0,  # 0.2 points of 2,000 validation images would be 4 images: too few to rank short schedules
    "weight_bits": [8, 4],  # the widths where the paper's storage argument is made
    "irregular_rates": [10, 40, 100],
    "structured_rates": [2, 4],
    "admm_epochs": 1,
    "retrain_epochs": 1,
    "quantize": {"admm_epochs": 1, "mapping_fractions": [0.5, 1.0], "mapping_epochs": 1, "binary_epochs": 1},
    "spread_seeds": [],  # no extra seeds (a minute more): T8 shows the demo's own seed, the study runs one more
    "latency": {"batches": [1, 64], "min_run_time_s": 0.1, "sweep_layers": {"lenet-fc1": [500, 800, 1]},
                "sweep_sparsities": [0.5, 0.9, 0.99]},
}


def demo_params(study: dict[str, Any], data_root: str, val_size: int = VAL_IMAGES) -> dict[str, Any]:
    """``params.yaml`` shrunk to the demo profile: the first compared baseline only, same keys otherwise."""
    params = copy.deepcopy(study)
    baseline = params["compare"]["baselines"][0]
    params["data"] = {"root": data_root, "val_size": val_size, "check_sha256": False}  # a sample, not the published files
    params["baselines"] = {baseline: {**params["baselines"][baseline], "epochs": PROFILE["epochs"]}}
    params["compare"] = {**params["compare"], "baselines": [baseline], "weight_bits": PROFILE["weight_bits"],
                         "nm_baselines": [baseline] if NM_SCHEME in params["compare"]["schemes"] else []}
    params["admm"]["tolerance_pp"] = PROFILE["tolerance_pp"]
    params["prune"] = {baseline: params["prune"][baseline]}
    for scheme, schedule in params["prune"][baseline].items():
        if scheme == NM_SCHEME:  # N:M steps through its patterns (their rates are fixed): the first two, 2x and 4x
            schedule["patterns"] = schedule["patterns"][:2]
        else:
            schedule["rates"] = PROFILE["irregular_rates"] if scheme == "irregular" else PROFILE["structured_rates"]
        schedule.update(admm_epochs=PROFILE["admm_epochs"], retrain_epochs=PROFILE["retrain_epochs"])
        schedule.pop("stop_after_misses", None)
    params["quantize"] = {baseline: {**params["quantize"][baseline], **PROFILE["quantize"]}}
    params["latency"] = {**params["latency"], **PROFILE["latency"]}
    params["spread"] = {"seeds": PROFILE["spread_seeds"]}
    return params


def write_sample(dataset: str, source_root: Path, target_root: Path, n_train: int, n_test: int, seed: int) -> None:
    """A seeded sample of the real training and test files, written in the same IDX layout."""
    spec = data.dataset_spec(dataset)
    source, target = spec.raw_dir(source_root), spec.raw_dir(target_root)
    rng = np.random.default_rng(seed)
    for images_name, labels_name, n in ((data._TRAIN_IMAGES, data._TRAIN_LABELS, n_train),
                                        (data._TEST_IMAGES, data._TEST_LABELS, n_test)):
        images, labels = data.read_idx(source / images_name), data.read_idx(source / labels_name)
        if n > len(labels):
            raise ValueError(f"the demo samples {n} images from {source / images_name}, which holds {len(labels)}")
        keep = np.sort(rng.choice(len(labels), size=n, replace=False))
        data.write_idx(target / images_name, images[keep])
        data.write_idx(target / labels_name, labels[keep])


def run_report(params_file: Path, out: Path, label: str) -> Path:
    """The report notebook on the demo's outputs, kept as ``runs/report.ipynb`` and exported to HTML."""
    from study.stages.launch import export_html, run_notebook

    notebook = paths.REPO_ROOT / "notebooks" / "report.ipynb"
    executed = out / "runs" / "report.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    run_notebook(notebook, executed, {"params_file": str(params_file), "out_root": str(out), "label": label})
    page = out / "report" / "index.html"
    export_html(executed, page)
    return page


def run(params_file: str | Path = "params.yaml", out_root: str | Path = DEMO_ROOT, source_data: str | Path | None = None,
        sizes: tuple[int, int, int] = (TRAIN_IMAGES, TEST_IMAGES, VAL_IMAGES), label: str = LABEL) -> Path:
    """Write the demo's data sample and params, run every stage, then the report; return the report page."""
    started = time.perf_counter()
    out = paths.from_root(out_root).resolve()
    if out in (paths.REPO_ROOT, *paths.REPO_ROOT.parents) or (out / "dvc.yaml").exists():
        raise ValueError(f"--out {out_root} would overwrite the study's own outputs; give the demo a folder of its own "
                         f"(default: {DEMO_ROOT})")
    study_file = paths.from_root(params_file)
    study = read_yaml(study_file.read_text())  # N:M patterns stay patterns in a file DVC wrote back
    load_params(study_file)  # the study's own params must be valid before anything is written
    source = paths.from_root(source_data if source_data is not None else study["data"]["root"])
    n_train, n_test, val_size = sizes
    for folder in ("results", "metrics", "models", "report", "runs", "tmp"):
        shutil.rmtree(out / folder, ignore_errors=True)  # a fresh demo: no record of an earlier profile survives
    data_root = out / "data"
    # relative to the repository when inside it, so that demo/params.yaml still holds after the clone moves
    values = demo_params(study, str(data_root.relative_to(paths.REPO_ROOT)) if data_root.is_relative_to(paths.REPO_ROOT)
                         else str(data_root), val_size)
    baseline = values["compare"]["baselines"][0]
    dataset = values["baselines"][baseline]["dataset"]
    write_sample(dataset, source, data_root, n_train, n_test, values["seed"])
    demo_file = out / "params.yaml"
    demo_file.parent.mkdir(parents=True, exist_ok=True)
    demo_file.write_text(f"# {label}\n# Written by `python -m study.demo` from {study_file.name}; edit study.demo.PROFILE instead.\n"
                         + yaml.safe_dump(values, sort_keys=False))
    params = load_params(demo_file)
    layout = paths.Layout(out, fallback=out)  # reads only what the demo wrote
    stages = [(name, item) for name, item in stage_items(params).items() if item[0] != "report"]
    for number, (name, (kind, _, identity)) in enumerate(stages, 1):
        stage_started = time.perf_counter()
        module = importlib.import_module(f"study.stages.{'quantize' if kind == 'quantize_dense' else kind}")
        with phase(f"demo {number}/{len(stages) + 1} {name}"):
            module.run(params, layout, **identity)
        print(f"[demo {number}/{len(stages) + 1}] {name} done in {time.perf_counter() - stage_started:.0f} s "
              f"({time.perf_counter() - started:.0f} s so far)", flush=True)
    page = run_report(demo_file, out, label)
    print(f"[demo {len(stages) + 1}/{len(stages) + 1}] report done: {page} ({time.perf_counter() - started:.0f} s in all)",
          flush=True)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="the study's parameters, shrunk to the demo profile")
    parser.add_argument("--out", default=DEMO_ROOT, help="output folder, relative to the repository root")
    args = parser.parse_args(argv)
    try:
        run(args.params, args.out)
    except (ParamsError, data.DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
