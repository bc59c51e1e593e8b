"""Every notebook runs through papermill at a tiny config, and dvc.yaml passes only parameters it declares."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import yaml

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _execute(name: str, out: Path, **parameters) -> None:
    papermill.execute_notebook(
        str(REPO / "notebooks" / name),
        str(out),
        parameters=parameters,
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_a_parameters_cell(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), f"{path.name}: clear outputs before committing"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"


def test_dvc_passes_only_declared_parameters() -> None:
    """A misspelt `-p name` in dvc.yaml would otherwise be injected silently and ignored."""
    dvc_yaml = (REPO / "dvc.yaml").read_text()
    for path in NOTEBOOKS:
        declared = set(papermill.inspect_notebook(str(path)))
        for command in re.findall(rf"papermill[^\n]*notebooks/{path.name}(?:[^\n]|\n\s+-p)*", dvc_yaml):
            passed = set(re.findall(r"-p (\w+)", command))
            assert passed, f"no parameters passed to {path.name}"
            assert passed <= declared, f"{path.name} lacks parameters {sorted(passed - declared)}"


def _tiny_params(tmp_path: Path, synthetic_root: Path) -> Path:
    """params.yaml shrunk to a tiny config: same keys, synthetic data, one or two epochs a phase."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {"root": str(synthetic_root), "val_size": 56}
    params["admm"].update(batch_size=32, lr=0.05, retrain_lr=0.05, tolerance_pp=50.0)
    for scheme, schedule in params["prune"]["lenet5-mnist"].items():
        schedule.update(rates=schedule["rates"][:2], admm_epochs=1, retrain_epochs=1)
    params["quantize"]["lenet5-mnist"].update(admm_epochs=1, mapping_fractions=[0.5, 1.0], mapping_epochs=1, binary_epochs=1)
    params["latency"].update(batches=[1, 4], min_run_time_s=0.01, sweep_layers={"tiny": [8, 16, 2]}, sweep_sparsities=[0.5, 0.9])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_pipeline_on_tiny_data(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage end to end, with no network: checkpoints, metrics, tables, figures, HTML.

    Each notebook kernel loads tests/netguard/sitecustomize.py, which logs any attempt to reach a
    non-local address or resolve a remote name; the log must stay empty.
    """
    netlog = tmp_path / "network.log"
    monkeypatch.setenv("STUDY_NETGUARD_LOG", str(netlog))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests" / "netguard"), os.environ.get("PYTHONPATH")])))
    assert {p.name for p in NOTEBOOKS} == {"train.ipynb", "prune.ipynb", "quantize.ipynb", "weights.ipynb", "storage.ipynb",
                                             "energy.ipynb", "latency.ipynb", "report.ipynb"}, "add new notebooks here"
    runs = tmp_path / "runs"
    runs.mkdir()
    for dataset in ("mnist", "fashion_mnist"):
        key = f"lenet5-{dataset}"
        _execute(
            "train.ipynb",
            runs / f"train-{key}.ipynb",
            model="lenet5",
            dataset=dataset,
            epochs=1,
            batch_size=32,
            data_root=str(synthetic_root),
            val_size=56,
            check_sha256=False,
            checkpoint_path=str(tmp_path / "models" / key / "dense.pt"),
            metrics_path=str(tmp_path / "metrics" / f"{key}.json"),
            history_path=str(tmp_path / "metrics" / f"{key}.history.csv"),
            resume_path=str(tmp_path / "resume" / f"{key}.pt"),
        )
        metrics = json.loads((tmp_path / "metrics" / f"{key}.json").read_text())
        assert metrics["scheme"] == "dense" and metrics["weight_bits"] == 32 and metrics["pruning_rate"] == 1.0
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert (tmp_path / "models" / key / "dense.pt").is_file()
        assert not (tmp_path / "resume" / f"{key}.pt").exists()

    params_file = _tiny_params(tmp_path, synthetic_root)
    for scheme in ("irregular", "filter", "channel", "column"):
        name = f"lenet5-mnist-{scheme}"
        _execute(
            "prune.ipynb",
            runs / f"prune-{name}.ipynb",
            params_file=str(params_file),
            baseline="lenet5-mnist",
            scheme=scheme,
            dense_checkpoint=str(tmp_path / "models" / "lenet5-mnist" / "dense.pt"),
            out_dir=str(tmp_path / "models" / "lenet5-mnist" / f"prune-{scheme}"),
            metrics_path=str(tmp_path / "prune" / f"{name}.json"),
            history_path=str(tmp_path / "prune" / f"{name}.admm.csv"),
            check_sha256=False,
        )
        metrics = json.loads((tmp_path / "prune" / f"{name}.json").read_text())
        assert metrics["scheme"] == scheme and len(metrics["steps"]) == 2
        assert metrics["pruning_rate"] > 1.5 and set(metrics["per_layer"]) == {"conv1", "conv2", "fc1", "fc2"}
        assert metrics["admm_history"] and Path(metrics["selected_checkpoint"]).is_file()
        assert metrics["compact_pruning_rate"] >= metrics["pruning_rate"] * 0.999
        assert "w_minus_z" in (tmp_path / "prune" / f"{name}.admm.csv").read_text().splitlines()[0]

    # Same params, same results: a second irregular run reproduces every metric but timings and provenance.
    _execute(
        "prune.ipynb",
        runs / "prune-again.ipynb",
        params_file=str(params_file),
        dense_checkpoint=str(tmp_path / "models" / "lenet5-mnist" / "dense.pt"),
        out_dir=str(tmp_path / "again"),
        metrics_path=str(tmp_path / "again" / "irregular.json"),
        history_path=str(tmp_path / "again" / "irregular.admm.csv"),
        check_sha256=False,
    )
    first, second = (_comparable(json.loads(p.read_text()))
                     for p in (tmp_path / "prune" / "lenet5-mnist-irregular.json", tmp_path / "again" / "irregular.json"))
    assert first == second

    for scheme, bits in (("irregular", 2), ("filter", 1), ("dense", 1), ("dense", 4)):
        name = f"lenet5-mnist-{scheme}-{bits}"
        source = tmp_path / "models" / "lenet5-mnist" / ("dense.pt" if scheme == "dense" else f"prune-{scheme}/selected.pt")
        _execute(
            "quantize.ipynb",
            runs / f"quantize-{name}.ipynb",
            params_file=str(params_file),
            baseline="lenet5-mnist",
            scheme=scheme,
            bits=bits,
            checkpoint_path=str(tmp_path / "models" / "lenet5-mnist" / f"quantize-{scheme}-{bits}" / "model.pt"),
            metrics_path=str(tmp_path / "quantize" / f"{name}.json"),
            source_checkpoint=str(source),
            check_sha256=False,
        )
        metrics = json.loads((tmp_path / "quantize" / f"{name}.json").read_text())
        assert metrics["weight_bits"] == bits and metrics["scheme"] == scheme
        # b-bit levels: at most 2^b - 1 distinct values per layer, zero included (binary: +-alpha, and 0 if pruned)
        most = 2**bits - 1 if bits > 1 else 3
        assert all(n <= most for n in metrics["distinct_values"].values()), metrics["distinct_values"]
        if scheme == "dense" and bits == 1:
            assert set(metrics["distinct_values"].values()) == {2}  # fully binarized: +-alpha, no zeros

    baseline_outputs = {
        "train_metrics": str(tmp_path / "metrics" / "lenet5-mnist.json"),
        "prune_metrics_glob": str(tmp_path / "prune" / "lenet5-mnist-*.json"),
    }
    every_model = {  # what the storage, weights and energy stages read: every model of the baseline
        **baseline_outputs,
        "models_dir": str(tmp_path / "models" / "lenet5-mnist"),
        "quantize_metrics_glob": str(tmp_path / "quantize" / "lenet5-mnist-*.json"),
    }
    _execute(
        "storage.ipynb",
        runs / "storage.ipynb",
        params_file=str(params_file),
        tables_dir=str(tmp_path / "storage" / "lenet5-mnist"),
        metrics_path=str(tmp_path / "storage" / "lenet5-mnist.json"),
        **every_model,
    )
    storage = json.loads((tmp_path / "storage" / "lenet5-mnist.json").read_text())
    assert {m["scheme"] for m in storage["models"]} == {"dense", "irregular", "filter", "channel", "column"}
    assert len(storage["models"]) == 1 + 4 + 4  # dense fp32, four pruned fp32, four quantized
    for model in storage["models"]:
        assert model["total_bits"] == sum(model[c] for c in ("header", "pointers", "indices", "fillers", "codebook", "values"))
    for table in ("models", "layers", "formats", "break-even", "ideal"):
        assert (tmp_path / "storage" / "lenet5-mnist" / f"{table}.csv").stat().st_size > 0

    _execute(
        "weights.ipynb",
        runs / "weights.ipynb",
        out_dir=str(tmp_path / "weights" / "lenet5-mnist"),
        **every_model,
    )
    with np.load(tmp_path / "weights" / "lenet5-mnist" / "masks.npz", allow_pickle=False) as masks:
        assert {"irregular/conv2", "filter/conv2", "channel/fc1", "column/fc2"} <= set(masks.files)
        assert masks["filter/conv2"].shape == (50, 500) and masks["filter/conv2"].dtype == bool

    _execute(
        "energy.ipynb",
        runs / "energy.ipynb",
        params_file=str(params_file),
        tables_dir=str(tmp_path / "energy" / "lenet5-mnist"),
        metrics_path=str(tmp_path / "energy" / "lenet5-mnist.json"),
        **every_model,
    )
    energy = json.loads((tmp_path / "energy" / "lenet5-mnist.json").read_text())
    assert len(energy["models"]) == 9 and all(m["total_nj"] > 0 for m in energy["models"])
    dense_energy = next(m for m in energy["models"] if m["scheme"] == "dense")
    assert all(m["total_nj"] < dense_energy["total_nj"] for m in energy["models"] if m["scheme"] != "dense" and m["weight_bits"] == 32)

    _execute(
        "latency.ipynb",
        runs / "latency.ipynb",
        params_file=str(params_file),
        dense_checkpoint=str(tmp_path / "models" / "lenet5-mnist" / "dense.pt"),
        tables_dir=str(tmp_path / "latency" / "lenet5-mnist"),
        metrics_path=str(tmp_path / "latency" / "lenet5-mnist.json"),
        **baseline_outputs,
    )
    latency = json.loads((tmp_path / "latency" / "lenet5-mnist.json").read_text())
    assert set(latency["ratio_to_dense"]) >= {"dense", "irregular (CSR)", "filter (compacted)"}
    assert set(latency["ratio_to_dense"]["dense"]) == {"1", "4"}
    assert set(latency["crossover_sparsity"]) == {"tiny"}

    report_dir = tmp_path / "report"
    _execute(
        "report.ipynb",
        runs / "report.ipynb",
        train_metrics_glob=str(tmp_path / "metrics" / "*.json"),
        prune_metrics_glob=str(tmp_path / "prune" / "*.json"),
        quantize_metrics_glob=str(tmp_path / "quantize" / "*.json"),
        storage_metrics_glob=str(tmp_path / "storage" / "*.json"),
        energy_metrics_glob=str(tmp_path / "energy" / "*.json"),
        latency_metrics_glob=str(tmp_path / "latency" / "*.json"),
        weights_dirs_glob=str(tmp_path / "weights" / "*"),
        summary_dir=str(tmp_path / "summary"),
        plots_dir=str(tmp_path / "plots"),
        published_results=str(REPO / "references" / "published_results.csv"),
        out_dir=str(report_dir),
    )
    csv = (report_dir / "tables" / "T1_baselines.csv").read_text()
    assert csv.count("\nlenet5,") == 2
    assert "| lenet5" in (report_dir / "tables" / "T1_baselines.md").read_text()
    for table in ("T1_baselines", "T2_irregular", "T3_schemes", "T4_quantization", "T5_storage_lenet5-mnist",
                  "T5_iso_bits_lenet5-mnist", "T5_formats_lenet5-mnist", "T6_energy_lenet5-mnist",
                  "T7_latency_lenet5-mnist", "claims", "provenance"):
        assert (report_dir / "tables" / f"{table}.csv").stat().st_size > 0
        assert (report_dir / "tables" / f"{table}.md").stat().st_size > 0
        assert "\\begin{tabular}" in (report_dir / "tables" / f"{table}.tex").read_text()
    assert "ADMM-NN-S" in (report_dir / "tables" / "T2_irregular.csv").read_text()  # published rows beside ours
    for figure in ("F1_masks_lenet5-mnist", "F8_weight_distributions_lenet5-mnist", "F2_admm_convergence_lenet5-mnist", "F3_accuracy_vs_rate", "F4_storage_vs_rate_lenet5-mnist",
                   "F5_break_even_lenet5-mnist", "F6_energy_breakdown_lenet5-mnist", "F7_latency_vs_sparsity_lenet5-mnist"):
        for ext in ("png", "svg"):
            assert (report_dir / "figures" / f"{figure}.{ext}").stat().st_size > 1000

    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--no-input",
         str(runs / "report.ipynb"), "--output-dir", str(report_dir), "--output", "index"],
        check=True, capture_output=True,
    )
    summaries = sorted(p.name for p in (tmp_path / "summary").glob("*.json"))
    assert "prune-lenet5-mnist-irregular.json" in summaries and "storage-lenet5-mnist.json" in summaries
    assert set(json.loads((tmp_path / "summary" / "train-lenet5-mnist.json").read_text())) >= {"model", "test_accuracy", "wall_s"}
    assert (tmp_path / "plots" / "F3_irregular.csv").is_file() and (tmp_path / "plots" / "F7_lenet5-mnist_tiny_csr.csv").is_file()
    assert not netlog.exists(), f"network use during the pipeline:\n{netlog.read_text()}"
    html = (report_dir / "index.html").read_text()
    assert "T1 Dense baselines" in html and "fashion_mnist" in html
    assert "import" not in re.sub(r"<style.*?</style>|<script.*?</script>", "", html, flags=re.S)  # code hidden


def _comparable(metrics: dict) -> dict:
    """Metrics without what legitimately differs between identical runs: timings, provenance, paths."""
    drop = {"wall_s", "provenance", "selected_checkpoint"}
    out = {k: v for k, v in metrics.items() if k not in drop}
    out["steps"] = [{k: v for k, v in step.items() if k != "checkpoint"} for step in out.get("steps", [])]
    return out


def test_train_notebook_rejects_unknown_model_before_training(tmp_path: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown model 'lenet6'; valid models"):
        _execute("train.ipynb", tmp_path / "out.ipynb", model="lenet6", metrics_path=str(tmp_path / "m.json"))
    assert not (tmp_path / "m.json").exists()
