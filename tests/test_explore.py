"""The explorer's callbacks on layers small enough to count by hand, and on a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.explore import app, exercises, layer
from study.explore.layer import Choice
from study.explore.session import Candidate, Explorer, choose, find_models, quick_model
from tests.conftest import write_tiny_params

# A 2x4 FC weight: row norms^2 0.30 / 0.6125, column norms^2 0.10 / 0.2525 / 0.20 / 0.36.
W = torch.tensor([[0.1, -0.5, 0.2, 0.0], [0.3, 0.05, -0.4, 0.6]])
HEADER_BITS = 8 * 2 + 32 * 2 + 8 * 3 + 8  # format and rank, the two dimensions, widths and scheme, pointer width


def test_choice_refuses_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="scheme='rows'"):
        Choice("fc1", scheme="rows")
    with pytest.raises(ValueError, match="rate=0.5"):
        Choice("fc1", rate=0.5)
    with pytest.raises(ValueError, match="weight_bits=9"):
        Choice("fc1", weight_bits=9)
    with pytest.raises(ValueError, match="index_format='coo'"):
        Choice("fc1", index_format="coo")


@pytest.mark.parametrize(("scheme", "expected"), [
    ("irregular", [[0, 1, 0, 0], [1, 0, 1, 1]]),  # the four largest magnitudes
    ("filter", [[0, 0, 0, 0], [1, 1, 1, 1]]),  # the row of larger norm
    ("channel", [[0, 1, 0, 1], [0, 1, 0, 1]]),  # an FC layer's channels are its inputs: the two columns of larger norm
    ("column", [[0, 1, 0, 1], [0, 1, 0, 1]]),
])
def test_prune_keeps_the_largest_units_at_half_rate(scheme: str, expected: list[list[int]]) -> None:
    pruned, mask = layer.prune(W, scheme, 2.0)
    assert mask.int().tolist() == expected
    assert torch.equal(pruned, W * mask)


def test_two_bit_survivors_take_four_non_zero_levels() -> None:
    pruned, mask = layer.prune(W, "irregular", 2.0)
    quantized, alpha = layer.quantize(pruned, mask, 2)
    # survivors 0.5, 0.3, 0.4, 0.6 on +-1, +-2: codes (2, 1, 1, 2), alpha = <a,q>/<q,q> = 2.9 / 10 (error 0.019;
    # +-1 alone, alpha 0.45, errs 0.05)
    assert alpha == pytest.approx(0.29)
    assert torch.allclose(quantized, torch.tensor([[0, -0.58, 0, 0], [0.29, 0, -0.29, 0.58]]))
    full, none = layer.quantize(pruned, mask, 32)
    assert none is None and torch.equal(full, pruned)


def test_storage_of_the_tiny_layer_counted_by_hand() -> None:
    pruned, mask = layer.prune(W, "irregular", 2.0)
    quantized, _ = layer.quantize(pruned, mask, 2)
    csr = layer.stored(quantized, "irregular", 2, "csr")
    # two row ends of 3 bits (counts up to 4), four 2-bit column indices, one float32 scale, four 2-bit levels
    assert (csr["header"], csr["pointers"], csr["indices"], csr["scale"], csr["codebook"], csr["values"]) == (HEADER_BITS, 6, 8, 32, 0, 8)
    assert csr["total_bits"] == HEADER_BITS + 6 + 8 + 32 + 8 and csr["value_form"] == "scale"
    auto = layer.stored(quantized, "irregular", 2)
    assert auto["total_bits"] == min(layer.stored(quantized, "irregular", 2, f)["total_bits"] for f in ("rel_csc", "rel_csr", "csr", "bitmap"))
    filtered, filter_mask = layer.prune(W, "filter", 2.0)
    structured = layer.stored(layer.quantize(filtered, filter_mask, 2)[0], "filter", 2)
    # one flag per row, one row of four 2-bit levels of the scale 0.3375
    assert (structured["indices"], structured["values"], structured["scale"]) == (2, 8, 32)
    assert structured["total_bits"] == HEADER_BITS + 2 + 32 + 8


def test_structured_energy_charges_only_the_kept_groups() -> None:
    table = {"int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1, "fp32_add": 0.9, "fp32_mult": 3.7,
             "sram_32bit_read": 5.0, "dram_32bit_read": 640.0, "idle_lane_cycle": 0.0}
    config = layer.energy.EnergyConfig(lanes=2)
    view = layer.breakdown(W, Choice("fc", "filter", 2.0, 32), 3, table, config)
    assert view["energy_counts"]["macs"] == 4 * 3  # one kept row of four weights at three positions, not 8 * 3
    assert view["energy_pj"]["mac"] == pytest.approx(12 * (3.7 + 0.9))
    assert view["energy_counts"]["sram_activation_bits"] == (12 + 3) * 32  # one output row kept, fp32 activations
    irregular = layer.breakdown(W, Choice("fc", "irregular", 2.0, 8, "csr"), 1, table, config)
    assert irregular["energy_counts"]["macs"] == 4 and irregular["layer_rate"] == 2.0


@pytest.fixture(scope="module")
def tiny_session(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Explorer:
    folder = tmp_path_factory.mktemp("explore")
    params = write_tiny_params(folder / "params.yaml", synthetic_root)
    return Explorer(quick_model(params, folder / "out"), val_images=40)


def test_a_view_changes_one_layer_and_restores_it(tiny_session: Explorer) -> None:
    before = {n: m.weight.detach().clone() for n, m in tiny_session.layers.items()}
    view = tiny_session.view(Choice("conv2", "channel", 5.0, 3))
    assert all(torch.equal(before[n], m.weight) for n, m in tiny_session.layers.items())
    assert 0.0 <= view["val_accuracy"] <= 1.0 and view["val_images"] == 40
    kept = int(torch.count_nonzero(view["quantized"]))
    assert view["model_rate"] == pytest.approx(tiny_session.weights_total() / (tiny_session.nonzero_total() - 25_000 + kept))
    assert torch.unique(view["quantized"][view["quantized"] != 0]).numel() <= 8  # 3-bit survivors: +-1..4 alpha
    html = app.summary_html(view)
    assert f"data-part='total_bits'><b>{view['storage']['total_bits']:,}</b>" in html
    assert tiny_session.accuracy({}) == tiny_session.baseline_accuracy


def test_the_exercises_answer_on_the_model_at_hand(tiny_session: Explorer) -> None:
    weight = tiny_session.layers["conv1"].weight.detach()  # 500 weights: small enough for a brute-force check
    rate, irregular, structured = exercises.break_even_rate(weight, "filter", 4.0, 4)
    keep = round(weight.numel() / rate)
    assert irregular == exercises.irregular_bits(weight, keep, 4) <= structured
    assert exercises.irregular_bits(weight, keep + 1, 4) > structured  # one more kept weight no longer fits
    assert structured == exercises.structured_bits(weight, "filter", 4.0, 4)
    for exercise in exercises.EXERCISES:
        answer = exercise.answer(tiny_session)
        assert tiny_session.largest_layer in answer or tiny_session.busiest_conv_layer in answer, exercise.title


def test_an_nm_pattern_fixes_its_rate_and_keeps_n_of_every_m(tiny_session: Explorer) -> None:
    assert Choice("fc1", "1:8", rate=3.0).rate == 8.0 and Choice("fc1", "2:4").rate == 2.0
    weight = tiny_session.layers["fc1"].weight.detach()  # 500 x 800: reduction 800, a multiple of 4
    pruned, mask = layer.prune(weight, "2:4", 99.0)
    groups = mask.reshape(-1, 4)
    assert (groups.sum(dim=1) == 2).all() and torch.equal(pruned, weight * mask)
    conv1 = tiny_session.layers["conv1"].weight.detach()  # one input channel x 5 x 5 = 25: no groups of 4, left dense
    assert layer.prune(conv1, "2:4", 2.0)[1].all() and layer.stored(conv1, "2:4", 32)["format"] == "dense"


def test_the_explorers_nm_numbers_are_the_packages(tiny_session: Explorer) -> None:
    from study.costs import energy, storage

    view = tiny_session.view(Choice("fc1", "2:4", 2.0, 8))
    row = storage.layer_storage(view["quantized"], "2:4", 8)
    assert view["storage"] == row and row["format"] in ("nm_hw", "nm_min")
    config = tiny_session.energy_config
    counts = energy.layer_counts(view["quantized"], tiny_session.positions["fc1"], row, 8, config, "2:4")
    assert view["energy_pj"] == pytest.approx(energy.energy_of(counts, tiny_session.energy_table, 8, config))
    rate, irregular, semi = exercises.break_even_rate(view["dense"], "2:4", 2.0, 8)
    keep = round(view["dense"].numel() / rate)
    assert semi == row["total_bits"] and irregular <= semi < exercises.irregular_bits(view["dense"], keep + 1, 8)
    assert "2:4" in app.summary_html(view) and "2x" in app.summary_html(view)


def test_models_are_found_and_a_wrong_name_says_what_exists(tiny_session: Explorer) -> None:
    candidate = tiny_session.candidate
    out_root = candidate.checkpoint.parents[2]
    found = find_models(candidate.params_file, out_root)
    assert candidate.label in [c.label for c in found] and candidate.label.endswith("lenet5-mnist-quick (dense)")
    assert choose(candidate.label, candidate.params_file, out_root) == candidate
    assert choose(str(candidate.checkpoint), candidate.params_file, out_root).checkpoint == candidate.checkpoint
    with pytest.raises(FileNotFoundError, match="make demo"):
        choose("no-such-model", candidate.params_file, out_root)
    assert isinstance(candidate, Candidate)


def test_papermill_draws_the_views_and_answers_without_widgets(tiny_session: Explorer, tmp_path: Path) -> None:
    import nbformat
    import papermill

    from tests.conftest import REPO

    candidate = tiny_session.candidate
    executed = tmp_path / "explore.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "explore.ipynb"), str(executed), cwd=str(REPO / "notebooks"),
                               progress_bar=False, parameters={
                                   "params_file": str(candidate.params_file), "out_root": str(candidate.checkpoint.parents[2]),
                                   "model": str(candidate.checkpoint), "layer": "conv2", "scheme": "filter", "rate": 4.0,
                                   "weight_bits": 3, "val_images": 40, "interactive": False, "show_answers": True})
    outputs = [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    data = [o.get("data", {}) for o in outputs]
    assert any("image/png" in d for d in data)
    total = tiny_session.view(Choice("conv2", "filter", 4.0, 3))["storage"]["total_bits"]
    assert any(f"data-part='total_bits'><b>{total:,}</b>" in d.get("text/html", "") for d in data)
    answers = [d["text/markdown"] for d in data if d.get("text/markdown", "").startswith(">")]
    assert len(answers) == len(exercises.EXERCISES)
    assert not any("application/vnd.jupyter.widget-view+json" in d for d in data)


def _publish(folder: Path, session: Explorer) -> list[dict]:
    """A published folder as the export stage writes it: the dense fp32 model and an irregular 8-bit one."""
    import copy

    import pandas as pd
    from safetensors.torch import save_file

    from study.compression import constraints, quantize
    from study.costs import model_file

    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in session.model.state_dict().items()}, str(folder / "dense-fp32.safetensors"),
              metadata={"model": "lenet5", "dataset": "mnist", "scheme": "dense", "weight_bits": "32"})
    pruned = copy.deepcopy(session.model)
    with torch.no_grad():
        for layer_ in pruned.modules():
            if isinstance(layer_, (torch.nn.Conv2d, torch.nn.Linear)):
                layer_.weight.copy_(constraints.project_pruned(layer_.weight, "irregular", layer_.weight.numel() // 20)[0])
    quantize.snap_to_levels(pruned, 8, keep_support=True)
    header = model_file.save(folder / "admm-irregular-step2-8bit.stm", pruned, model="lenet5", dataset="mnist",
                             scheme="irregular", weight_bits=8)
    rows = [{"file": "admm-irregular-step2-8bit.stm", "method": "ADMM", "scheme": "irregular", "step": 2, "target_rate": 20.0,
             "weight_bits": 8, "why": "picked; frontier: storage (KB)"},
            {"file": "dense-fp32.safetensors", "method": "dense", "scheme": "dense", "step": 0, "target_rate": 1.0,
             "weight_bits": 32, "why": "dense"}]
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    return [header]


def test_published_models_come_first_named_as_the_report_names_them_and_open(tiny_session: Explorer, tmp_path: Path) -> None:
    from study.core import models as registry
    from study.costs import storage
    from study.explore.model_view import whole_model
    from study.explore.session import published_models

    (header,) = _publish(tmp_path / "models" / "published" / "lenet5-mnist", tiny_session)
    found = published_models(tiny_session.candidate.params_file, root=tmp_path)
    assert [c.label for c in found] == ["published: lenet5-mnist, dense, fp32",
                                        "published: lenet5-mnist, ADMM irregular step 2 (20x), 8-bit (picked)"]
    dense, irregular = (Explorer(c, val_images=40) for c in found)
    assert dense.stored["weight_bits"] == 32 and dense.baseline_accuracy == tiny_session.baseline_accuracy
    assert (irregular.stored["scheme"], irregular.stored["weight_bits"]) == ("irregular", 8)
    table = whole_model(irregular.model, "lenet5", "irregular", 8, irregular.params)
    assert table["layer"].tolist() == [*registry.prunable_layers(irregular.model), "total"]
    total = table[table["layer"] == "total"].iloc[0]
    assert total["total bits"] == header["stream_bits"] == int(
        storage.model_storage(irregular.model, "irregular", 8, registry.INPUT_SHAPES["lenet5"])["total_bits"].sum())
    assert total["energy, weights on chip (nJ)"] < total["energy, weights from DRAM (nJ)"]  # 8-bit LeNet-5 fits 256 KB


def test_the_whole_model_table_opens_a_layer_when_its_name_is_clicked(tiny_session: Explorer, tmp_path: Path) -> None:
    from study.explore.session import published_models

    _publish(tmp_path / "models" / "published" / "lenet5-mnist", tiny_session)
    irregular = Explorer(published_models(tiny_session.candidate.params_file, root=tmp_path)[1], val_images=40)
    page = app.App(irregular, app.initial_choice(irregular), [irregular.candidate])
    buttons = {b.description: b for b in page.model_panel.children[1].children if hasattr(b, "on_click")}
    assert list(buttons) == list(irregular.layers) and page.layer.value == "fc1"
    buttons["conv2"].click()
    assert page.layer.value == "conv2" and "<b>conv2</b>" in page.summary.value
    static = app.model_table_html(irregular)
    total = app.model_table(irregular).iloc[-1]["total bits"]
    assert f"data-model-part='total bits'>{int(total):,}</td>" in static
    from study.explore.model_view import BIT_COLUMNS

    table = app.model_table(irregular)  # bits are whole: shown as 500, never as "500.000"
    assert all(str(table[column].dtype) == "int64" for column in BIT_COLUMNS)
    assert f"data-model-part='index bits'>{int(table.iloc[-1]['index bits']):,}</td>" in static
    assert app.model_table(tiny_session) is None  # a pipeline checkpoint does not say how it is stored


def test_compare_puts_two_choices_on_one_layer_and_finds_the_matching_rate(tiny_session: Explorer) -> None:
    from study.explore import compare

    first = Choice("conv2", "channel", 4.0, 4)
    numbers = compare.side_by_side(tiny_session, first, Choice("fc1", "irregular", 8.0, 4))
    assert numbers["second"]["choice"].layer == "conv2"  # the second choice is made on the first one's layer
    assert numbers["first"]["total_bits"] == tiny_session.view(first)["storage"]["total_bits"]
    second_view = tiny_session.view(Choice("conv2", "irregular", 8.0, 4))
    assert numbers["second"]["total_bits"] == second_view["storage"]["total_bits"]
    assert numbers["second"]["val_accuracy"] == second_view["val_accuracy"]
    rate, at = compare.matching_rate(tiny_session, first, Choice("conv2", "irregular", 4.0, 4), steps=6)
    assert 1.0 <= rate <= compare.MAX_RATE and at["second"]["choice"].rate == rate
    assert at["second"]["val_accuracy"] >= at["first"]["val_accuracy"]  # it matches where it stops
    html = app.compare_html(at)
    assert f"data-compare='first-total_bits'>{at['first']['total_bits']:,}<" in html
    assert f"data-compare='second-total_bits'>{at['second']['total_bits']:,}<" in html


def test_compare_mode_on_the_page_shows_both_and_matches_on_a_click(tiny_session: Explorer) -> None:
    from study.explore import compare

    page = app.App(tiny_session, Choice("conv2", "channel", 4.0, 4), [tiny_session.candidate])
    page.comparing.value = True
    page.scheme2.value = "irregular"
    expected = compare.side_by_side(tiny_session, page.choice(), page.second_choice())
    assert page.compared.value == app.compare_html(expected)
    page.match.click()
    rate, _ = compare.matching_rate(tiny_session, page.choice(), page.second_choice())
    assert page.rate2.value == pytest.approx(rate, rel=0.02)
    assert "data-compare='second-val_accuracy'" in page.compared.value


def test_a_stored_model_opens_at_its_own_bits_scheme_and_layer_rate(tiny_session: Explorer, tmp_path: Path) -> None:
    """A published 8-bit irregular model starts at 8 bits and the rate its layer has, so the first view is the layer
    as stored; a dense fp32 model keeps the fresh start (irregular 20x, 4-bit); both when switched to on the page."""
    from study.explore.session import published_models

    _publish(tmp_path / "models" / "published" / "lenet5-mnist", tiny_session)
    dense_candidate, irregular_candidate = published_models(tiny_session.candidate.params_file, root=tmp_path)
    irregular = Explorer(irregular_candidate, val_images=40)
    choice = app.initial_choice(irregular)
    weight = irregular.layers[choice.layer].weight
    assert (choice.scheme, choice.weight_bits) == ("irregular", 8)
    assert choice.rate == pytest.approx(weight.numel() / int(torch.count_nonzero(weight)))
    stored = app.model_table(irregular).set_index("layer").loc[choice.layer, "total bits"]
    assert irregular.view(choice)["storage"]["total_bits"] == stored  # the first view is the layer as it is stored
    assert app.initial_choice(irregular, weight_bits=4).weight_bits == 4  # a parameter given wins
    dense = Explorer(dense_candidate, val_images=40)
    start = app.initial_choice(dense)
    assert (start.scheme, start.rate, start.weight_bits) == ("irregular", 20.0, 4)
    page = app.App(dense, start, [dense_candidate, irregular_candidate])
    page.model.value = irregular_candidate.label
    assert (page.scheme.value, page.bits.value) == ("irregular", 8)
    assert page.rate.value == pytest.approx(choice.rate, rel=0.01) and f"{stored:,}" in page.summary.value


def test_compare_headings_stand_apart_and_energies_have_thousands_separators(tiny_session: Explorer) -> None:
    from study.explore import compare

    numbers = compare.side_by_side(tiny_session, Choice("fc1", "irregular", 2.0, 32), Choice("fc1", "channel", 2.0, 32))
    html = app.compare_html(numbers)
    assert "data-compare-heading='first'>first<br>" in html and "data-compare-heading='second'>second<br>" in html
    energy = numbers["first"]["energy_nj"]
    assert energy >= 1000 and f"data-compare='first-energy_nj'>{energy:,.3f}<" in html and "," in f"{energy:,.3f}"


def test_a_stored_nm_model_opens_each_layer_at_the_pattern_it_keeps() -> None:
    from types import SimpleNamespace

    from study.compression import nm

    torch.manual_seed(0)
    sparse, dense = torch.nn.Linear(32, 8), torch.nn.Linear(30, 8)  # 30 inputs: no groups of 4, left dense
    with torch.no_grad():
        sparse.weight.copy_(nm.project(sparse.weight, "1:4")[0])
    session = SimpleNamespace(stored={"scheme": "nm", "weight_bits": 8}, layers={"fc1": sparse, "fc2": dense})
    assert app.starting_point(session, "fc1") == {"scheme": "1:4", "rate": 4.0, "weight_bits": 8}
    assert app.starting_point(session, "fc2")["scheme"] == "irregular"  # a dense layer: the fresh start, at the model's bits
