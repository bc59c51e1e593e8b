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

CASES = [
    # --- params.yaml: validated before any work
    Case("params: unknown top-level key", _params_with(lambda p: p.update(sed=1)), ParamsError, r"sed: unknown key"),
    Case("params: unknown model", _params_with(lambda p: p["baselines"]["lenet5-mnist"].update(model="lenet6")),
         ParamsError, r"baselines\.lenet5-mnist\.model: unknown model 'lenet6'"),
    Case("params: epochs not an integer", _params_with(lambda p: p["baselines"]["lenet5-mnist"].update(epochs="many")),
         ParamsError, r"baselines\.lenet5-mnist\.epochs"),
    Case("params: kept fraction split on a missing layer",
         _params_with(lambda p: p["prune"]["lenet5-mnist"]["irregular"]["density_weights"].update(fc3=1)),
         ParamsError, r"density_weights\.fc3: the model has no layer 'fc3'"),
    Case("params: channel pruning of a 1-channel input",
         _params_with(lambda p: p["prune"]["lenet5-mnist"]["channel"]["density_weights"].update(conv1=1)),
         ParamsError, r"conv1 has a single channel unit"),
    Case("params: unknown pruning scheme", _params_with(lambda p: p["prune"]["lenet5-mnist"].update(kernel={})),
         ParamsError, r"prune\.lenet5-mnist\.kernel"),
    Case("params: rates not increasing", _params_with(lambda p: p["prune"]["lenet5-mnist"]["irregular"].update(rates=[40, 15])),
         ParamsError, r"strictly increasing"),
    Case("params: negative energy entry", _params_with(lambda p: p["energy"]["table_pj"].update(dram_32bit_read=-1)),
         ParamsError, r"energy\.table_pj: .*dram_32bit_read"),
    Case("params: missing energy entry", _params_with(lambda p: p["energy"]["table_pj"].pop("fp32_add")),
         ParamsError, r"missing entr.*fp32_add"),
    Case("params: unknown energy component", _params_with(lambda p: p["energy"]["table_pj"].update(int4_mult=0.1)),
         ParamsError, r"unknown component.*int4_mult"),
    Case("params: lanes below one", _params_with(lambda p: p["energy"].update(lanes=0)), ParamsError, r"energy\.lanes"),
    Case("params: negative on-chip memory", _params_with(lambda p: p["energy"].update(on_chip_kb=-1)), ParamsError,
         r"energy\.on_chip_kb"),
    Case("params: index width out of range", _params_with(lambda p: p["storage"].update(index_bits=0)),
         ParamsError, r"storage\.index_bits"),
    Case("params: unknown sparse format", _params_with(lambda p: p["storage"].update(formats=["coo"])),
         ParamsError, r"storage\.formats: .*\['coo'\]"),
    Case("params: unstorable weight width", _params_with(lambda p: p["storage"].update(break_even_weight_bits=[9])),
         ParamsError, r"break_even_weight_bits: .*\[9\]"),
    Case("params: sparsities not increasing", _params_with(lambda p: p["latency"].update(sweep_sparsities=[0.9, 0.5])),
         ParamsError, r"latency\.sweep_sparsities"),
    Case("params: malformed sweep layer", _params_with(lambda p: p["latency"]["sweep_layers"].update(bad=[10, 0])),
         ParamsError, r"latency\.sweep_layers: .*bad"),
    # --- data files
    Case("data: truncated IDX", lambda t: data.read_idx(_idx(t, lambda b: b[:-100])), data.DataError, r"truncated"),
    Case("data: wrong IDX magic", lambda t: data.read_idx(_idx(t, lambda b: b"\x1f\x8b\x08\x00" + b[4:])),
         data.DataError, r"bad IDX magic 1f8b0800"),
    Case("data: missing dataset", lambda t: data.load_dataset("mnist", t / "nowhere"), data.DataError,
         r"run `python -m study.core.data fetch`"),
    Case("data: unknown dataset", lambda t: data.load_dataset("cifar100", t), ValueError,
         r"unknown dataset 'cifar100'; valid datasets"),
    # --- checkpoints
    Case("checkpoint: wrong shapes", lambda t: training.load_model(_checkpoint(t, _wrong_shape)), artifacts.CheckpointError,
         r"size mismatch for fc1.weight"),
    Case("checkpoint: truncated bytes", lambda t: training.load_model(_checkpoint(t, raw=lambda b: b[: len(b) // 2])),
         artifacts.CheckpointError, r"unreadable"),
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

