"""The report's verdicts on small hand-made inputs: every outcome of every claim, the iso-bits choice,
the tolerance rule and model selection."""

from __future__ import annotations

import pandas as pd
import pytest

from study import contract
from study.report import claims, compute
from study.report import storage as report_storage
from tests.conftest import REPO

KB = 8 * 1024


def _storage_models(rows: list[tuple[str, int, float, bool, float]]) -> pd.DataFrame:
    """(scheme, weight bits, KB stored, within tolerance, test accuracy) -> the storage stage's models.csv columns."""
    return pd.DataFrame([{"scheme": s, "weight_bits": b, "total_bits": kb * KB, "within_tolerance": ok, "test_accuracy": acc}
                         for s, b, kb, ok, acc in rows])


def _energy_models(rows: list[tuple], ) -> pd.DataFrame:
    """(scheme, bits, nJ, within tolerance[, nJ with the weights on chip]); on chip defaults to the DRAM figure."""
    return pd.DataFrame([{"scheme": r[0], "weight_bits": r[1], "total_nj": r[2], "within_tolerance": r[3],
                          "total_nj_on_chip": r[4] if len(r) > 4 else r[2]} for r in rows])


def _latency_models(csr: float, structured: float) -> pd.DataFrame:
    return pd.DataFrame([{"kind": k, "batch": 1, "ratio_to_dense": r}
                         for k, r in (("dense", 1.0), ("irregular (CSR)", csr), ("filter (compacted)", structured),
                                      ("channel (compacted)", structured * 2))])


def _prune_record(rate: float, test: float, dense_test: float = 0.99, dataset: str = "mnist") -> dict:
    return {"scheme": "irregular", "model": "lenet5", "dataset": dataset, "pruning_rate": rate, "test_accuracy": test,
            "baseline_test_accuracy": dense_test}


PUBLISHED = pd.read_csv(REPO / "references" / "published_results.csv")


@pytest.mark.parametrize("record, epochs, verdict", [
    (_prune_record(348.0, 0.9895), 10, "holds"),  # the published rate, 0.05 pp lost
    (_prune_record(340.0, 0.9895), 10, "not reproduced at this budget"),  # short of 348x, no fudge factor
    (_prune_record(111.0, 0.9909), 10, "not reproduced at this budget"),  # 10 epochs a step against 310 a target
    (_prune_record(111.0, 0.9909), 400, "does not hold"),  # short of the rate with more than the published budget
    (_prune_record(348.0, 0.9850), 400, "does not hold"),  # the rate, but 0.5 pp lost
    (_prune_record(348.0, 0.9895, dataset="fashion_mnist"), 10, "not measured"),  # another data set is not the claim's
    (None, 10, "not measured"),
])
def test_irregular_rate_claim(record, epochs, verdict) -> None:
    row = claims.irregular_rate_claim([record] if record else [], PUBLISHED, 0.2, epochs)
    assert row["at our scale"] == verdict
    assert row["published"] == "348x"  # read from the references file
    if verdict == "not reproduced at this budget":
        assert f"{epochs} epochs per pruning step here against 310 per target" in row["ours"]


def test_irregular_rate_claim_reads_the_tolerance_it_is_given() -> None:
    record = _prune_record(348.0, 0.9850)  # 0.5 pp below the dense model
    assert claims.irregular_rate_claim([record], PUBLISHED, 0.2, 400)["at our scale"] == "does not hold"
    assert claims.irregular_rate_claim([record], PUBLISHED, 1.0, 400)["at our scale"] == "holds"


@pytest.mark.parametrize("accuracy, verdict", [(0.9905, "holds"), (0.9700, "does not hold"), (None, "not measured")])
def test_binarization_claim(accuracy, verdict) -> None:
    records = [] if accuracy is None else [{"scheme": "dense", "weight_bits": 1, "test_accuracy": accuracy}]
    assert claims.binarization_claim(records, 0.99, 0.2)["at our scale"] == verdict


def test_iso_bits_prefers_a_structured_model_within_tolerance_over_a_smaller_one_outside() -> None:
    iso = report_storage.iso_bits_comparison(_storage_models([
        ("irregular", 4, 6.0, True, 0.991), ("channel", 4, 3.0, False, 0.950), ("filter", 4, 9.0, True, 0.990)]))
    row = iso.iloc[0]
    assert (row["smallest structured"], row["smaller"], row["both within tolerance"]) == ("filter", "irregular", True)


def test_storage_verdict_names_the_smaller_model_its_accuracy_and_what_ideal_coding_changes() -> None:
    models = _storage_models([("irregular", 8, 10.0, True, 0.99), ("channel", 8, 17.0, True, 0.99),
                              ("channel", 1, 2.0, False, 0.767)])
    iso = report_storage.iso_bits_comparison(models[models["weight_bits"] == 8])
    for wins, phrase in (([True, False], "would still store less at b_w in [1]"), ([False, False], "at every bit width tried")):
        ideal = pd.DataFrame({"weight_bits": [1, 8], "structured_wins": wins, "structured_scheme": "channel"})
        text = report_storage.storage_verdict(iso, ideal, models)
        assert ("irregular 10.0 KB (99.0% test, within tolerance) vs channel 17.0 KB (99.0% test, within tolerance): "
                "**irregular** is smaller; an equal-accuracy comparison") in text and phrase in text
        assert "not a floor for one particular mask" in text
    text = report_storage.storage_verdict(iso, ideal.assign(structured_wins=[True, False]), models)
    assert "the real channel models at these widths reach 1-bit 76.70% (outside tolerance) test" in text


def test_storage_verdict_says_when_the_accuracies_differ() -> None:
    iso = report_storage.iso_bits_comparison(_storage_models([("irregular", 3, 5.0, True, 0.9891), ("channel", 3, 4.0, False, 0.9837)]))
    ideal = pd.DataFrame({"weight_bits": [3], "structured_wins": [False], "structured_scheme": "channel"})
    text = report_storage.storage_verdict(iso, ideal)
    assert "channel 4.0 KB (98.37% test, outside tolerance): **structured** is smaller; not an equal-accuracy comparison" in text


def test_the_memory_assumption_can_flip_the_energy_verdict() -> None:
    # irregular wins while DRAM reads dominate; on chip its index decoding and idle lanes cost more
    models = _energy_models([("irregular", 8, 2.0, True, 0.6), ("channel", 8, 3.0, True, 0.4)])
    text = compute.compute_verdict(models, _latency_models(2.2, 0.22), 64)
    assert "8-bit weights, weights on chip when they fit 64 KB, both models within tolerance: irregular 1 nJ" in text
    assert ("At 8 bits the memory assumption decides: irregular needs least energy with the weights read from DRAM, "
            "channel with them kept on chip.") in text


@pytest.mark.parametrize("csr, structured, verdict", [(2.2, 0.5, "holds"), (0.4, 0.5, "does not hold")])
def test_latency_claim(csr, structured, verdict) -> None:
    assert claims.latency_claim(_latency_models(csr, structured))["at our scale"] == verdict


def test_latency_claim_without_a_csr_model_is_not_measured() -> None:
    models = _latency_models(1.0, 0.5)
    assert claims.latency_claim(models[models["kind"] != "irregular (CSR)"])["at our scale"] == "not measured"


def test_compute_verdict_reads_both_tables_and_says_when_nothing_compares() -> None:
    text = compute.compute_verdict(_energy_models([("irregular", 8, 2900.0, True), ("channel", 8, 3900.0, True)]),
                                   _latency_models(2.2, 0.22), 256)
    assert "decides" not in text
    assert "both models within tolerance: irregular 2900 nJ vs channel 3900 nJ per inference: **irregular** needs least energy" in text
    assert "CSR runs at 2.20x the dense latency; the fastest structured model (filter (compacted)) at 0.22x" in text
    assert compute.compute_verdict(_energy_models([("irregular", 8, 1.0, False)]), _latency_models(1, 1)[:1], 256) == \
        "No pruned models within tolerance to compare."


def test_compute_verdict_names_the_accuracies_it_compares() -> None:
    energy = _energy_models([("irregular", 8, 2900.0, True), ("channel", 8, 3900.0, True)]).assign(test_accuracy=[0.9905, 0.9916])
    latency = _latency_models(2.2, 0.22).assign(test_accuracy=[0.9916, 0.9905, 0.9918, 0.9915])
    text = compute.compute_verdict(energy, latency, 256)
    assert ("both models within tolerance: irregular 2900 nJ, 99.05% test vs channel 3900 nJ, 99.16% test per inference"
            in text)
    assert "CSR runs at 2.20x the dense latency, 99.05% test; the fastest structured model (filter (compacted)) at 0.22x, 99.18% test" in text


def test_tolerance_rule_and_selection() -> None:
    assert contract.within_tolerance(0.9880, 0.9900, 0.2) and not contract.within_tolerance(0.9879, 0.9900, 0.2)
    # 10,000 images, dense at 99.00%: step 2 loses 10 images net (20 against 10), step 3 loses 200
    steps = [{"step": 1, "pruning_rate": 10.0, "val_accuracy": 0.990, "val_only_dense_right": 5, "val_only_step_right": 5},
             {"step": 2, "pruning_rate": 20.0, "val_accuracy": 0.989, "val_only_dense_right": 20, "val_only_step_right": 10},
             {"step": 3, "pruning_rate": 40.0, "val_accuracy": 0.970, "val_only_dense_right": 210, "val_only_step_right": 10}]
    steps = [s | {"val_images": 10_000} for s in steps]
    low, high = contract.step_loss_bounds(steps[1])  # 0.10 points lost, standard error sqrt(30) / 10,000
    assert (low, high) == pytest.approx((0.001 - 1.6449 * 0.000548, 0.001 + 1.6449 * 0.000548), abs=1e-6)
    assert contract.select_step(steps, 0.2)["step"] == 2  # 0.10 + 0.09 points: within 0.2
    assert contract.select_step(steps, 0.15)["step"] == 1  # the bound, not the 0.10 points, must fit
    assert contract.select_step(steps, 0.05)["step"] == 1  # step 1 loses nothing net: its bound is 0.07 points
    assert contract.select_step(steps, 0.01)["step"] == 1  # none qualifies: the most accurate
    assert contract.step_clearly_outside(steps[2], 0.2) and not contract.step_clearly_outside(steps[1], 0.05)
    with pytest.raises(KeyError, match="rerun its stage"):
        contract.select_step([{"step": 1, "pruning_rate": 2.0, "val_accuracy": 0.99}], 0.2)
    table = pd.DataFrame({"scheme": ["a", "b", "c"], "kb": [3.0, 1.0, 2.0], "within_tolerance": [True, False, True]})
    assert contract.lowest_within_tolerance(table, "kb")["scheme"] == "c"
    assert contract.lowest_within_tolerance(table.assign(within_tolerance=False), "kb")["scheme"] == "b"


def test_claims_table_has_one_verdict_column_per_network_and_a_summary_by_verdict() -> None:
    rate = claims.irregular_rate_claim([_prune_record(111.0, 0.9909)], PUBLISHED, 0.2, 10)
    energy = [claims.FRONTIER_CLAIMS[c][0] for c in ("energy_nj", "energy_on_chip_nj")]
    lenet_rows = [(c, 4, split, v, p) for c, v, p in (("energy_nj", "does not hold", 0.01), ("energy_on_chip_nj", "does not hold", 0.0))
                  for split in ("val", "test")]
    vgg_rows = [(c, 4, split, "holds", 0.99) for c in ("energy_nj", "energy_on_chip_nj") for split in ("val", "test")]
    lenet = [rate, claims.latency_claim(_latency_models(2.0, 0.5)),
             *[r for r in claims.frontier_claims(_verdicts(lenet_rows), 256) if r["claim"].split(" (")[0] in energy[0]]]
    vgg = [claims.latency_claim(_latency_models(0.4, 0.5)),
           *[r for r in claims.frontier_claims(_verdicts(vgg_rows), 256) if r["claim"].split(" (")[0] in energy[0]]]
    table = claims.claims_table({"lenet5-mnist": lenet, "vgg6-fashion_mnist": vgg})
    assert list(table.columns) == ["claim", "published", "lenet5-mnist: ours", "lenet5-mnist", f"lenet5-mnist: {claims.PROBABILITY}",
                                   "vgg6-fashion_mnist: ours", "vgg6-fashion_mnist", f"vgg6-fashion_mnist: {claims.PROBABILITY}"]
    assert table["claim"].tolist() == [r["claim"] for r in lenet]  # one row per claim, in the order first seen
    assert table["lenet5-mnist"].tolist() == ["not reproduced at this budget", "holds", "does not hold", "does not hold"]
    # the rate claim is about LeNet-5 only: no verdict for the other network
    assert table["vgg6-fashion_mnist"].tolist() == ["", "does not hold", "holds", "holds"]
    assert table["vgg6-fashion_mnist: ours"].iloc[1].startswith("batch 1: CSR 0.40x dense")
    summary = claims.claims_summary(table, ["lenet5-mnist", "vgg6-fashion_mnist"]).splitlines()
    assert summary[0].endswith("not reproduced at this budget for lenet5-mnist.")
    assert summary[1].endswith("holds for lenet5-mnist; does not hold for vgg6-fashion_mnist.")
    assert summary[2].endswith("does not hold for lenet5-mnist; holds for vgg6-fashion_mnist.")
    assert summary[3] == summary[2].replace("read from DRAM at every inference", "on chip when they fit 256 KB")


def _verdicts(rows: list[tuple[str, int, str, str, float]]) -> pd.DataFrame:
    """(claim, bits, split, verdict, P(structured cheaper)) -> the verdicts stage's verdicts.csv columns, at the
    study's tolerance (structured half the irregular cost at the line)."""
    return pd.DataFrame([{"base": "irregular", "challenger": "structured", "claim": c, "weight_bits": b, "split": split,
                          "tolerance_factor": 1.0, "tolerance_pp": 0.2,
                          "verdict": v, "p_cheaper": p, "p_two_sided": 0.02, "near_cut": False, "mc_error": 0.001,
                          "ratio": 0.5, "ratio_low": 0.4, "ratio_high": 0.6, "band_ratio": 0.5, "band_low": 0.4, "band_high": 0.6,
                          "base_cost": 20.0, "challenger_cost": 10.0, "seed_share": 0.1, "resamples": 20000,
                          "verdict_check_seed": v, "p_check_seed": p}
                         for c, b, split, v, p in rows])


@pytest.mark.parametrize("per_width, verdict", [
    ({8: ("holds", 0.99), 4: ("holds", 0.97)}, "holds"),
    ({8: ("holds", 0.99), 4: ("undecided at this budget", 0.6)}, "undecided at this budget"),
    ({8: ("holds", 0.99), 4: ("does not hold", 0.01)}, "does not hold"),
    ({8: ("not measured", float("nan"))}, "not measured"),
])
def test_frontier_claims_combine_the_widths_and_carry_each_probability(per_width, verdict) -> None:
    rows = [(claim, bits, split, v, p) for claim in claims.FRONTIER_CLAIMS for bits, (v, p) in per_width.items()
            for split in ("val", "test")]
    rows += [(claim, 32, "test", "does not hold", 0.0) for claim in claims.FRONTIER_CLAIMS]  # fp32: not the storage claim's
    found = claims.frontier_claims(_verdicts(rows), 256)
    assert len(found) == 3 and "fit 256 KB" in found[2]["claim"]
    assert found[0]["at our scale"] == verdict  # storage: quantized widths only
    assert found[1]["at our scale"] == "does not hold"  # energy: fp32 counts too ("the same bits")
    if verdict == "holds":
        assert found[0][claims.PROBABILITY] == "8-bit 0.990, 4-bit 0.970"
        assert ("8-bit: holds (P = 0.990 ± 0.001; val 0.99); structured / irregular 0.50x [0.40x, 0.60x] at the line "
                "(10 vs 20 KB), 0.50x over the band; seed noise 10% of the interval") in found[0]["ours"]


def test_frontier_claims_read_the_split_they_are_told_and_only_the_studys_tolerance() -> None:
    rows = _verdicts([("storage_kb", 8, "test", "holds", 0.99), ("storage_kb", 8, "val", "does not hold", 0.01)])
    looser = _verdicts([("storage_kb", 8, "test", "does not hold", 0.0)]).assign(tolerance_factor=1.5)
    table = pd.concat([rows, looser])
    assert claims.frontier_claims(table, 256)[0]["at our scale"] == "holds"
    assert claims.frontier_claims(table, 256, split="val")[0]["at our scale"] == "does not hold"
    assert "(P = 0.010 ± 0.001; test 0.99)" in claims.frontier_claims(table, 256, split="val")[0]["ours"]


def test_a_verdict_near_its_cut_or_turned_by_another_seed_says_so_and_a_side_never_reaching_reads_as_such() -> None:
    table = _verdicts([("storage_kb", 8, "test", "holds", 0.99)])
    table[["near_cut", "verdict_check_seed", "ratio_high"]] = [True, "undecided at this budget", float("inf")]
    ours = claims.frontier_claims(table, 256)[0]["ours"]
    assert "within 3 Monte Carlo errors of its cut" in ours and "another bootstrap seed: undecided at this budget" in ours
    assert "[0.40x, no irregular model]" in ours and "inf" not in ours


def test_nm_rows_follow_the_papers_claims_where_nm_models_were_priced() -> None:
    rows = _verdicts([(c, 8, "test", "holds", 0.99) for c in claims.FRONTIER_CLAIMS])
    assert len(claims.frontier_claims(rows, 256)) == 3  # no N:M model priced: the paper's three claims only
    nm = rows.assign(base="structured", challenger="nm", ratio=2.0, ratio_high=float("inf"))
    found = claims.frontier_claims(pd.concat([rows, nm]), 256)
    assert len(found) == 6 and found[3]["claim"].startswith("With quantized weights, N:M semi-structured pruning stores "
                                                            "less than structured pruning")
    assert "N:M / structured 2.00x [0.40x, no structured model] at the line (10 vs 20 KB)" in found[3]["ours"]
    assert found[3]["published"] == "(not in the paper)" and found[3][claims.PROBABILITY] == "8-bit 0.990"


def test_a_width_where_no_pruned_model_is_within_tolerance_is_not_reproduced_at_this_budget() -> None:
    """No side has a pruned model within the line: that width compares no pruning, so it neither holds nor is
    undecided, whatever the replicates tip; a decided width beside it still decides."""
    rows = [(c, b, split, "not reproduced at this budget", 0.5) for c in claims.FRONTIER_CLAIMS for b in (4, 1)
            for split in ("val", "test")]
    table = _verdicts(rows).assign(ratio=float("nan"), base_cost=float("inf"), challenger_cost=float("inf"))
    storage = claims.frontier_claims(table, 256)[0]
    assert storage["at our scale"] == "not reproduced at this budget"
    assert "1-bit: not reproduced at this budget: no pruned model on either side" in storage["ours"]
    assert "inf" not in storage["ours"] and "nan" not in storage["ours"]
    assert storage[claims.PROBABILITY] == "4-bit none within, 1-bit none within"
    decided = pd.concat([table, _verdicts([(c, 8, split, "holds", 0.99) for c in claims.FRONTIER_CLAIMS
                                           for split in ("val", "test")])])
    assert claims.frontier_claims(decided, 256)[0]["at our scale"] == "holds"
    assert claims.combined_verdict(["not measured", "not reproduced at this budget"]) == "not reproduced at this budget"


def test_the_tolerance_table_shows_each_claim_at_every_tolerance_and_the_opening_counts_the_steady_ones() -> None:
    pair = {"base": "irregular", "challenger": "structured"}
    stage_claims = pd.DataFrame([pair | {"claim": "storage_kb", "split": s, "tolerance_factor": f, "verdict": v}
                                 for s in ("val", "test") for f, v in ((0.5, "undecided at this budget"),
                                                                       (1.0, "undecided at this budget"), (1.5, "does not hold"))]
                                + [pair | {"claim": "energy_nj", "split": "test", "tolerance_factor": f, "verdict": "holds"}
                                   for f in (0.5, 1.0, 1.5)]
                                + [{"base": "structured", "challenger": "nm", "claim": "storage_kb", "split": "test",
                                    "tolerance_factor": f, "verdict": "holds"} for f in (0.5, 1.0, 1.5)])
    table = claims.tolerance_table({"lenet5-mnist": stage_claims}, {"lenet5-mnist": 0.2}, "test", 256)
    assert table.columns.tolist() == ["network", "claim", "0.5x tolerance", "1x tolerance", "1.5x tolerance"]
    assert table.iloc[0].tolist() == ["lenet5-mnist", "storage", "undecided at this budget (0.1 pp)",
                                      "undecided at this budget (0.2 pp)", "does not hold (0.3 pp)"]
    assert table.iloc[2]["claim"] == "storage: N:M against structured"
    text = claims.tolerance_text(table, "test")
    assert "2 of 3 claim verdicts" in text and "0.5x, 1x, 1.5x the tolerance" in text


def test_a_band_of_one_level_reads_as_that_level() -> None:
    from study.stages.frontier import spans

    assert spans([(0.002, 0.002)]) == "0.20"
    assert spans([(0.0, 0.001), (0.0015, 0.0015)]) == "0.00-0.10; 0.15"


def test_frontier_claims_without_the_stage_are_not_measured() -> None:
    assert [r["at our scale"] for r in claims.frontier_claims(pd.DataFrame(), 256)] == ["not measured"] * 3


@pytest.mark.parametrize("admm, rival, verdict", [
    ((0.97, 0.02), (0.99, 0.0), "holds"),
    ((0.97, 0.02), (0.50, 0.2), "undecided at this budget"),
    ((0.97, 0.02), (0.0, 0.96), "does not hold"),
])
def test_prior_art_claim_needs_admm_ahead_on_every_scheme(admm, rival, verdict) -> None:
    methods = pd.DataFrame([{"scheme": "irregular", "rival": "magnitude", "admm_rate_at_line": 80.0, "rival_rate_at_line": 40.0,
                             "p_admm_higher": admm[0], "p_equal": 1 - sum(admm), "p_rival_higher": admm[1]},
                            {"scheme": "filter", "rival": "L1 filter", "admm_rate_at_line": 4.0, "rival_rate_at_line": 4.0,
                             "p_admm_higher": rival[0], "p_equal": 1 - sum(rival), "p_rival_higher": rival[1]}])
    row = claims.prior_art_claim(methods)
    assert row["at our scale"] == verdict
    assert "irregular: ADMM 80x vs magnitude 40x at the line (P(ADMM higher) = 0.97" in row["ours"]
    assert claims.prior_art_claim(pd.DataFrame())["at our scale"] == "not measured"


def test_t5_shows_the_published_file_of_each_model_beside_its_computed_bits() -> None:
    models = pd.DataFrame([{"scheme": s, "weight_bits": b, "test_accuracy": 0.99, "within_tolerance": True,
                            "pruning_rate": r, "formats": f, "values": v, "indices": i, "fillers": 0, "pointers": 0,
                            "codebook": 0, "scale": 32, "header": 64, "ideal_index_bits": 1.0,
                            "total_bits": v + i + 96, "compression_ratio": 9.0}
                           for s, b, r, f, v, i in (("dense", 8, 1.0, "dense", 8000, 0),
                                                    ("irregular", 8, 10.0, "rel_csr", 800, 400))])
    published = pd.DataFrame([
        {"file": "dense-8bit.stm", "scheme": "dense", "weight_bits": 8, "stream_bytes": 1012, "file_bytes": 1900, "why": "dense"},
        {"file": "admm-irregular-step2-8bit.stm", "scheme": "irregular", "weight_bits": 8, "stream_bytes": 162,
         "file_bytes": 900, "why": "picked; frontier: storage (KB)"},
        {"file": "magnitude-irregular-step3-8bit.stm", "scheme": "irregular", "weight_bits": 8, "stream_bytes": 100,
         "file_bytes": 700, "why": "frontier: storage (KB)"}])  # not the picked model: not T5's
    table = report_storage.storage_table(models, published=published)
    row = table[table["scheme"] == "irregular"].iloc[0]
    assert (row["file"], row["file streams (bytes)"], row["file size (bytes)"]) == ("admm-irregular-step2-8bit.stm", 162, 900)
    assert "file" not in report_storage.storage_table(models).columns  # no export stage, no file columns
