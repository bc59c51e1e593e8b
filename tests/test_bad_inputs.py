"""The bad-input suite: each bad input gets its specific error, and no earlier output is overwritten.

Every case runs like a stage: read and check its inputs, then write an output where a finished output
already lies. The case must fail with its own message before that write, leaving the earlier output
byte-identical and no temporary file behind. ``conftest.py`` prints how many cases ran.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from study import paths
from study.core import artifacts, catalog, data, models, training
from study.costs import encoding, energy
from study.core.params import ParamsError, load_params
from study.explore.session import Candidate, Explorer
from tests.conftest import REPO

FINISHED = b'{"finished": "an earlier run; must survive every failure"}'
BAD_INPUTS_KEY = pytest.StashKey[list]()  # names of the cases that passed, for the terminal summary


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Path], object]  # gets a scratch folder holding output.json; returns what it would write
    error: type[Exception]
    match: str


def _params_with(edit: Callable[[dict], None]) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        edit(params)
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        return load_params(tmp / "params.yaml")
    return run


def _idx(tmp: Path, mutate: Callable[[bytes], bytes]) -> Path:
    path = tmp / "train-images-idx3-ubyte"
    data.write_idx(path, np.zeros((10, 28, 28), dtype=np.uint8))
    path.write_bytes(mutate(path.read_bytes()))
    return path


def _checkpoint(tmp: Path, mutate: Callable[[dict], dict] | None = None, raw: Callable[[bytes], bytes] | None = None) -> Path:
    path = tmp / "model.pt"
    training.save_model(path, models.build_model("lenet5"), "lenet5", "mnist")
    if mutate:
        torch.save(mutate(torch.load(path, weights_only=True)), path)
    if raw:
        path.write_bytes(raw(path.read_bytes()))
    return path


def _wrong_shape(payload: dict) -> dict:
    payload["state_dict"]["fc1.weight"] = torch.zeros(10, 10)
    return payload


class _Exploit:
    def __reduce__(self):  # what a malicious pickle runs on load
        return (print, ("code ran",))


def _evil(tmp: Path) -> Path:
    path = tmp / "evil.pt"
    path.write_bytes(pickle.dumps({"model": _Exploit()}, protocol=2))
    return path


def _metrics(**change: object) -> dict:
    return {"model": "lenet5", "dataset": "mnist", "scheme": "dense", "weight_bits": 32, "test_accuracy": 0.99,
            "val_accuracy": 0.99, "pruning_rate": 1.0, "wall_s": 1.0, **change}


TABLE = {"int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1, "fp32_add": 0.9, "fp32_mult": 3.7,
         "sram_32bit_read": 5.0, "dram_32bit_read": 640.0, "idle_lane_cycle": 0.02}


def _stage_outputs_without_checkpoint(tmp: Path) -> object:
    """Results of a train and a prune stage whose checkpoints are gone (a deleted models/ folder)."""
    layout = paths.Layout(tmp, fallback=tmp)
    record = {k: v for k, v in _metrics().items() if k != "wall_s"}
    artifacts.write_results(layout.write(paths.results("train", "lenet5-mnist")), record)
    artifacts.write_results(layout.write(paths.results("prune", paths.item("lenet5-mnist", "irregular"))),
                            {**record, "scheme": "irregular", "selected_checkpoint": "models/gone.pt"})
    return catalog.baseline_models(layout, "lenet5-mnist", ["irregular"], [])


@dataclass(frozen=True)
class ParamsCase:
    """A bad value of params.yaml: the edit that makes it, and what its error must say. Also run under `dvc repro`
    on the tiny pipeline (tests/test_notebooks.py), where no earlier output may be lost to it."""

    name: str
    edit: Callable[[dict], object]
    match: str


PARAMS_CASES = [
    ParamsCase("params: unknown top-level key", lambda p: p.update(sed=1), r"sed: unknown key"),
    ParamsCase("params: unknown model", lambda p: p["baselines"]["lenet5-mnist"].update(model="lenet6"),
               r"baselines\.lenet5-mnist\.model: unknown model 'lenet6'"),
    ParamsCase("params: negative epochs", lambda p: p["baselines"]["lenet5-mnist"].update(epochs=-3),
               r"baselines\.lenet5-mnist\.epochs"),
    ParamsCase("params: epochs not an integer", lambda p: p["baselines"]["lenet5-mnist"].update(epochs="many"),
               r"baselines\.lenet5-mnist\.epochs"),
    ParamsCase("params: kept fraction split on a missing layer",
               lambda p: p["prune"]["lenet5-mnist"]["irregular"]["density_weights"].update(fc3=1),
               r"density_weights\.fc3: the model has no layer 'fc3'"),
    ParamsCase("params: channel pruning of a 1-channel input",
               lambda p: p["prune"]["lenet5-mnist"]["channel"]["density_weights"].update(conv1=1),
               r"conv1 has a single channel unit"),
    ParamsCase("params: unknown pruning scheme", lambda p: p["prune"]["lenet5-mnist"].update(kernel={}),
               r"prune\.lenet5-mnist\.kernel"),
    ParamsCase("params: infinite learning rate", lambda p: p["baselines"]["lenet5-mnist"].update(lr=float("inf")),
               r"baselines\.lenet5-mnist\.lr: .*finite"),
    ParamsCase("params: NaN tolerance", lambda p: p["admm"].update(tolerance_pp=float("nan")),
               r"admm\.tolerance_pp"),
    ParamsCase("params: infinite energy entry", lambda p: p["energy"]["table_pj"].update(fp32_add=float("inf")),
               r"energy\.table_pj"),
    ParamsCase("params: rates not increasing", lambda p: p["prune"]["lenet5-mnist"]["irregular"].update(rates=[40, 15]),
               r"strictly increasing"),
    ParamsCase("params: negative energy entry", lambda p: p["energy"]["table_pj"].update(dram_32bit_read=-1),
               r"energy\.table_pj: .*dram_32bit_read"),
    ParamsCase("params: missing energy entry", lambda p: p["energy"]["table_pj"].pop("fp32_add"),
               r"missing entr.*fp32_add"),
    ParamsCase("params: unknown energy component", lambda p: p["energy"]["table_pj"].update(int4_mult=0.1),
               r"unknown component.*int4_mult"),
    ParamsCase("params: lanes below one", lambda p: p["energy"].update(lanes=0), r"energy\.lanes"),
    ParamsCase("params: negative on-chip memory", lambda p: p["energy"].update(on_chip_kb=-1),
               r"energy\.on_chip_kb"),
    ParamsCase("params: index width out of range", lambda p: p["storage"].update(index_bits=0),
               r"storage\.index_bits"),
    ParamsCase("params: unknown sparse format", lambda p: p["storage"].update(formats=["coo"]),
               r"storage\.formats: .*\['coo'\]"),
    ParamsCase("params: unstorable weight width", lambda p: p["storage"].update(break_even_weight_bits=[9]),
               r"break_even_weight_bits: .*\[9\]"),
    ParamsCase("params: sparsities not increasing", lambda p: p["latency"].update(sweep_sparsities=[0.9, 0.5]),
               r"latency\.sweep_sparsities"),
    ParamsCase("params: malformed sweep layer", lambda p: p["latency"]["sweep_layers"].update(bad=[10, 0]),
               r"latency\.sweep_layers: .*bad"),
]

CASES = [
    # --- params.yaml: validated before any work
    *(Case(c.name, _params_with(c.edit), ParamsError, c.match) for c in PARAMS_CASES),
    # --- data files
    Case("data: truncated IDX", lambda t: data.read_idx(_idx(t, lambda b: b[:-100])), data.DataError, r"truncated"),
    Case("data: wrong IDX magic", lambda t: data.read_idx(_idx(t, lambda b: b"\x1f\x8b\x08\x00" + b[4:])),
         data.DataError, r"bad IDX magic 1f8b0800"),
    Case("data: missing dataset", lambda t: data.load_dataset("mnist", t / "nowhere"), data.DataError,
         r"run `python -m study.core.data fetch`"),
    Case("data: unknown dataset", lambda t: data.load_dataset("cifar100", t), ValueError,
         r"unknown dataset 'cifar100'; valid datasets"),
    Case("data: validation split larger than the files at hand", lambda t: data.load_dataset(
        "mnist", data.write_synthetic("mnist", t / "tiny", n_train=64, n_test=16, seed=0) or t / "tiny", val_size=500,
        check_sha256=False), data.DataError, r"data\.val_size=500: the mnist files at hand hold 64 training images"),
    # --- the explorer
    Case("explorer: negative validation images", lambda t: Explorer(Candidate("x", t / "x.pt", t / "p.yaml"), -5),
         ValueError, r"val_images=-5: .* at least 1"),
    Case("explorer: no validation images", lambda t: Explorer(Candidate("x", t / "x.pt", t / "p.yaml"), 0),
         ValueError, r"val_images=0: .* at least 1"),
    # --- checkpoints
    Case("checkpoint: wrong shapes", lambda t: training.load_model(_checkpoint(t, _wrong_shape)), artifacts.CheckpointError,
         r"size mismatch for fc1.weight"),
    Case("checkpoint: truncated bytes", lambda t: training.load_model(_checkpoint(t, raw=lambda b: b[: len(b) // 2])),
         artifacts.CheckpointError, r"is truncated \([\d,]+ bytes, an incomplete zip archive\)"),
    Case("checkpoint: another model", lambda t: training.load_model(_checkpoint(t), "resnet20"), artifacts.CheckpointError,
         r"holds model 'lenet5', expected 'resnet20'"),
    Case("checkpoint: arbitrary pickled objects", lambda t: artifacts.load_checkpoint(_evil(t)), artifacts.CheckpointError,
         r"not a safe weights-only file"),
    Case("checkpoint: a stage's model deleted", _stage_outputs_without_checkpoint, FileNotFoundError,
         r"dense.pt: the checkpoint of dense at 32 bits is missing; rerun its stage"),
    # --- encoder inputs
    Case("encoder: 3-D tensor", lambda t: encoding.encode(np.zeros((2, 3, 4)), "rel_csc"), encoding.EncodingError, r"3-D"),
    Case("encoder: index width 0", lambda t: encoding.encode(np.eye(3), "rel_csr", 32, 0), encoding.EncodingError,
         r"index_bits=0"),
    Case("encoder: weight width 9", lambda t: encoding.encode(np.eye(3), "dense", 9), encoding.EncodingError, r"weight_bits=9"),
    Case("encoder: NaN weights", lambda t: encoding.encode(np.array([[1.0, np.nan]]), "bitmap"), encoding.EncodingError, r"NaN"),
    Case("encoder: unquantized weights at 2 bits", lambda t: encoding.encode(np.arange(6.0).reshape(2, 3), "dense", 2),
         encoding.EncodingError, r"6 distinct stored values do not fit 2-bit codes"),
    Case("encoder: truncated stream", lambda t: encoding.decode(encoding.encode(np.eye(4), "csr").data[:3], 24),
         ValueError, r"truncated or corrupt"),
    # --- energy inputs and metrics
    Case("energy: unknown table component at run time", lambda t: energy.model_energy(
        models.build_model("lenet5"), "dense", 32, (1, 28, 28), {**TABLE, "mac": 1.0}, energy.EnergyConfig()),
         ValueError, r"unknown component.*mac"),
    Case("metrics: accuracy not a fraction", lambda t: artifacts.write_metrics(t / "output.json", _metrics(test_accuracy=99.2)),
         ValueError, r"test_accuracy=99.2 must be a fraction"),
    Case("metrics: a common key missing", lambda t: artifacts.write_metrics(t / "output.json", {"model": "lenet5"}),
         ValueError, r"lacks the common keys"),
    Case("results: timings in the record later stages read",
         lambda t: artifacts.write_results(t / "output.json", _metrics()), ValueError, r"timings and provenance belong in the metrics"),
    Case("metrics: NaN in the payload", lambda t: artifacts.write_metrics(t / "output.json", _metrics(loss=float("nan"))),
         ValueError, r"JSON compliant"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_clearly_and_keeps_earlier_outputs(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    output = tmp_path / "output.json"
    output.write_bytes(FINISHED)
    with pytest.raises(case.error, match=case.match):
        result = case.run(tmp_path)
        artifacts.write_json(output, {"result": repr(result)})  # reached only if the bad input slipped through
    assert output.read_bytes() == FINISHED, f"{case.name}: the earlier output was overwritten"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"], "temporary files left"
    request.config.stash.setdefault(BAD_INPUTS_KEY, []).append(case.name)


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) >= 25, f"the bad-input suite has {len(CASES)} cases; keep at least 25"
    assert len({c.name for c in CASES}) == len(CASES)



def test_a_setting_to_fix_ends_a_stage_with_its_sentence_not_a_traceback(tmp_path: Path) -> None:
    """runtime.device: cuda on a machine without a GPU: the launcher prints the one sentence that says what to change."""
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: cuda is a valid device here")
    root = tmp_path / "data"
    data.write_synthetic("mnist", root, seed=1)
    from tests.conftest import write_tiny_params

    params = write_tiny_params(tmp_path / "params.yaml", root)
    settings = yaml.safe_load(params.read_text())
    settings["runtime"]["device"] = "cuda"
    params.write_text(yaml.safe_dump(settings))
    result = subprocess.run([sys.executable, "-m", "study.stages.launch", "train", "--stage", "train@lenet5-mnist",
                             "--params", str(params)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert "error: runtime.device is 'cuda' but torch sees no GPU" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 3, result.stderr
