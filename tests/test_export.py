"""Which models the export stage publishes, and what it names their files: on a hand-made frontier table."""
from __future__ import annotations

import pandas as pd

from study.stages.export import chosen, file_name, frontier_reasons, save_safetensors


def _table() -> pd.DataFrame:
    """Two widths; dense plus two irregular and two structured models at each (id, side, costs, val accuracy)."""
    rows = []
    for bits, offset in ((32, 0), (8, 10)):
        for model_id, method, scheme, step, side, kb, acc in (
            ("dense", "dense", "dense", 0, "both", 100.0, 0.990),
            ("i1", "ADMM", "irregular", 1, "irregular", 20.0, 0.989),  # cheapest irregular within the band
            ("i2", "magnitude", "irregular", 1, "irregular", 30.0, 0.985),  # dearer and less accurate: dominated
            ("s1", "ADMM", "filter", 1, "structured", 40.0, 0.989),
            ("s2", "ADMM", "filter", 2, "structured", 10.0, 0.950),  # cheapest, but below the tolerance line
        ):
            rows.append({"id": f"{model_id}-{bits}", "method": method, "scheme": scheme, "step": step, "weight_bits": bits,
                         "side": side, "storage_kb": kb - offset * (kb > 50), "energy_nj": kb, "energy_on_chip_nj": kb,
                         "val_accuracy": acc})
    return pd.DataFrame(rows)


def test_frontier_members_are_the_cheapest_at_their_accuracy_inside_the_band() -> None:
    reasons = frontier_reasons(_table(), line_accuracy=0.988)
    assert set(reasons) == {"dense-32", "i1-32", "s1-32", "dense-8", "i1-8", "s1-8"}  # i2 dominated, s2 below the line
    assert reasons["i1-8"] == ["storage (KB)", "energy, weights from DRAM (nJ)", "energy, weights on chip (nJ)"]


def test_published_models_say_why_picks_and_dense_included() -> None:
    published = chosen(_table(), {"irregular": 1, "filter": 2}, line_accuracy=0.988)
    why = dict(zip(published["id"], published["why"]))
    assert why["dense-32"].startswith("dense; frontier:")
    assert why["s2-8"] == "picked"  # the pick at every width, even outside the band
    assert why["i1-32"].startswith("picked; frontier: storage (KB)")
    assert "i2-32" not in why and why["s1-32"].startswith("frontier:")


def test_file_names() -> None:
    assert file_name("dense", "dense", 0, 32) == "dense-fp32.safetensors"
    assert file_name("dense", "dense", 0, 4) == "dense-4bit.stm"
    assert file_name("L1 filter", "filter", 3, 32) == "l1filter-filter-step3-fp32.stm"
    assert file_name("ADMM", "irregular", 2, 8) == "admm-irregular-step2-8bit.stm"


def test_the_dense_file_is_the_same_bytes_every_time_and_keeps_its_metadata(tmp_path) -> None:
    """safetensors orders its metadata by hash, differently at each call: the committed file must not change."""
    import torch
    from safetensors import safe_open

    state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2)}
    metadata = {"model": "lenet5", "dataset": "mnist", "scheme": "dense", "weight_bits": "32", "a": "1", "z": "2"}
    written = set()
    for attempt in range(6):
        target = tmp_path / f"dense-{attempt}.safetensors"
        save_safetensors(state, target, metadata)
        written.add(target.read_bytes())
        with safe_open(str(target), framework="pt") as opened:
            assert opened.metadata() == metadata
            assert torch.equal(opened.get_tensor("fc.weight"), state["fc.weight"])
    assert len(written) == 1
    assert not list(tmp_path.glob("*.partial"))
