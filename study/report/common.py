"""Report helpers: build the study's tables, write them as CSV and Markdown."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed (CI, papermill)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from study.contract import PAIRED_KEYS, SCHEMES, accuracy_threshold, step_within_tolerance  # noqa: E402
from study.core.artifacts import atomic_write_bytes, atomic_write_text  # noqa: E402
from study.report.uncertainty import Evidence  # noqa: E402

SCHEME_ORDER = list(SCHEMES)  # table and legend order


def baseline_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Table T1: one row per dense baseline."""
    rows = [
        {
            "model": r["model"],
            "dataset": r["dataset"],
            "parameters": r["parameters"],
            "conv+FC weights": r["weights"],
            "MACs": r["macs"],
            "test accuracy (%)": round(100 * r["test_accuracy"], 2),
            "val accuracy (%)": round(100 * r["val_accuracy"], 2),
            "fp32 size (KB)": round(r["fp32_bytes"] / 1024, 1),
            "epochs": r["epochs"],
        }
        for r in records
        if r["scheme"] == "dense"
    ]
    return pd.DataFrame(rows)


def styled(table: pd.DataFrame, precision: int = 2):
    """How the report shows a table: no index, short numbers, empty cells blank, text left-aligned."""
    text = list(table.select_dtypes(include=["object", "category"]).columns)
    return (table.style.hide(axis="index").format(precision=precision, na_rep="", thousands=",")
            .set_properties(subset=text, **{"text-align": "left"}))


def write_table(table: pd.DataFrame, folder: Path | str, name: str, note: str = "") -> dict[str, Path]:
    """Write ``table`` as ``<name>.csv``, ``<name>.md`` and ``<name>.tex`` (LaTeX tabular) under ``folder``.

    A ``note`` (e.g. "DEMO profile ...") heads the Markdown and LaTeX files; the CSV stays plain data."""
    folder = Path(folder)
    paths = {"csv": folder / f"{name}.csv", "md": folder / f"{name}.md"}
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    blanks = table.astype(object).where(table.notna(), None)  # tabulate leaves only None cells empty
    atomic_write_text(paths["md"], (f"*{note}*\n\n" if note else "") + blanks.to_markdown(index=False, missingval="") + "\n")
    paths["tex"] = folder / f"{name}.tex"
    atomic_write_text(paths["tex"], (f"% {note}\n" if note else "")
                      + table.to_latex(index=False, escape=True, na_rep="", float_format="%g"))
    return paths


def stamp(fig: plt.Figure, text: str) -> None:
    """Mark a figure in its top-left corner (e.g. "DEMO profile"), so that it is never taken for the study's."""
    fig.text(0.005, 0.995, text, ha="left", va="top", fontsize=10, fontweight="bold", color="#c44e52",
             bbox={"facecolor": "white", "edgecolor": "#c44e52", "boxstyle": "round,pad=0.25"})


def _shown(path: Path, roots: list[Path]) -> str:
    """A metrics file named relative to the first of ``roots`` that holds it (the machine's folders say nothing)."""
    return next((path.relative_to(r) for r in roots if path.is_relative_to(r)), path).as_posix()


def timing_table(paths: Iterable[Path | str], roots: Iterable[Path | str] = ()) -> pd.DataFrame:
    """Each stage's wall time, read from its metrics file: seconds on the machine that ran it, which a rerun with the
    same results changes (so this table is apart from the ones that depend on results alone)."""
    roots = [Path(r) for r in roots]
    rows = [{"metrics": _shown(path, roots), "wall time (s)": round(float(json.loads(path.read_text())["wall_s"]), 1)}
            for path in map(Path, paths)]
    return pd.DataFrame(rows)


def provenance_table(paths: Iterable[Path | str], roots: Iterable[Path | str] = ()) -> pd.DataFrame:
    """Where each metrics file came from: commit, dirty flag (source only), library versions, lock, seed.
    Each file is named relative to the first of ``roots`` that holds it (the machine's folders say nothing)."""
    roots = [Path(r) for r in roots]
    rows = []
    for path in map(Path, paths):
        record = json.loads(path.read_text())
        origin = record.get("provenance", {})
        packages = origin.get("packages") or {k: origin.get(k) for k in ("torch", "torchvision", "dvc")}  # older records
        rows.append({"metrics": _shown(path, roots), "git commit": (origin.get("git_commit") or "")[:10] or None,
                     "uncommitted changes": origin.get("git_dirty"), "python": origin.get("python"),
                     **{name: version for name, version in packages.items()},
                     "lock": (origin.get("lock_sha256") or "")[:10] or None, "seed": origin.get("seed")})
    return pd.DataFrame(rows)


CI_COLUMN, P_COLUMN = "test 95% CI (%)", "McNemar p vs dense"


def model_columns(models_csv: pd.DataFrame, evidence: Evidence | None = None, baseline: str = "") -> dict[str, pd.Series]:
    """The leading columns of every per-model table (T5, T6): scheme, bits, accuracy (with its 95% interval
    and McNemar's p against the dense model when the evaluate stage's ``evidence`` is given), tolerance."""
    t = models_csv
    columns = {
        "scheme": pd.Categorical(t["scheme"], SCHEME_ORDER, ordered=True),
        "weight bits": t["weight_bits"],
        "test accuracy (%)": (100 * t["test_accuracy"]).round(2),
    }
    if evidence is not None:
        columns[CI_COLUMN] = pd.Series([evidence.interval(baseline, a) for a in t["test_accuracy"]], index=t.index)
        columns[P_COLUMN] = pd.Series([evidence.p_value(baseline, s, b) for s, b in zip(t["scheme"], t["weight_bits"])],
                                      index=t.index)
    columns["within tolerance (val)"] = t["within_tolerance"]
    return columns


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 2)


def network_of(record: dict[str, Any]) -> str:
    """The baseline a record belongs to: baselines are named ``<model>-<dataset>`` (params.yaml enforces it)."""
    return f"{record['model']}-{record['dataset']}"


def network_column(table: pd.DataFrame) -> pd.Series:
    """:func:`network_of` for every row of a table with ``model`` and ``dataset`` columns."""
    return table["model"] + "-" + table["dataset"]


PICK_COLUMN = "P(this step is the pick)"


def pick_probability(picks: dict[str, pd.DataFrame], record: dict[str, Any]) -> float | None:
    """The bootstrap probability (frontier stage, ``picks.csv``) that a record's selected step is the selection
    rule's pick, or None where the frontier stage has not run or does not know the step."""
    table = picks.get(network_of(record))
    if table is None or table.empty:
        return None
    method = "ADMM" if "method" not in record else record.get("method_label", "magnitude")
    row = table[(table["method"] == method) & (table["scheme"] == record["scheme"]) & (table["step"] == record["selected_step"])]
    return None if row.empty else round(float(row["pick_probability"].iloc[0]), 3)


def irregular_table(records: Iterable[dict[str, Any]], published: pd.DataFrame,
                    evidence: Evidence | None = None, picks: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Table T2: our non-structured results (rate, accuracy with its 95% interval and McNemar's p against
    the dense model, per-layer kept %) beside published ones. Records with a ``method`` (the magnitude
    baseline's) are rows of their own, named by it."""
    evidence = evidence or Evidence()
    rows = []
    for r in records:
        if r["scheme"] != "irregular":
            continue
        row = {
            "model": r["model"], "dataset": r["dataset"], "method": r.get("method", "ours (ADMM-NN-S, this suite)"),
            "pruning rate (x)": round(r["pruning_rate"], 1),
            "rate after compaction (x)": round(r["compact_pruning_rate"], 1) if "compact_pruning_rate" in r else None,
            "test accuracy (%)": _pct(r["test_accuracy"]),
            CI_COLUMN: evidence.interval(network_of(r), r["test_accuracy"]),
            P_COLUMN: evidence.step_p_value(network_of(r), "magnitude", "irregular", r["selected_step"]) if "method" in r
            else evidence.p_value(network_of(r), "irregular", 32),
            "baseline test accuracy (%)": _pct(r["baseline_test_accuracy"]),
            PICK_COLUMN: pick_probability(picks or {}, r),
        }
        row.update({f"{layer} kept (%)": round(100 * f, 2) for layer, f in r["per_layer"].items()})
        row["source"] = "this run"
        rows.append(row)
    models = {(r["model"], r["dataset"]) for r in rows}
    for _, p in published.iterrows():
        if (p["model"], p["dataset"]) in models and p["scheme"] == "irregular":
            rows.append({"model": p["model"], "dataset": p["dataset"], "method": p["method"],
                         "pruning rate (x)": p["pruning_rate"],
                         "test accuracy (%)": _pct(p["test_accuracy"]) if pd.notna(p["test_accuracy"]) else None,
                         "source": p["citation"]})
    return pd.DataFrame(rows)


def structured_table(records: Iterable[dict[str, Any]], evidence: Evidence | None = None) -> pd.DataFrame:
    """Table T3: every progressive step of every scheme: target and reached rate, accuracies (test with its
    95% interval and McNemar's p against the dense model), selection."""
    evidence = evidence or Evidence()
    rows = []
    for r in records:
        if r["scheme"] == "dense" or "steps" not in r:
            continue
        admm = "method" not in r  # the baselines' records name their method (and the L1 filter one its short label)
        threshold = accuracy_threshold(r["baseline_val_accuracy"], r["tolerance_pp"])
        method = "ADMM" if admm else r.get("method_label", "magnitude")
        for step in r["steps"]:
            selected = step["step"] == r["selected_step"]
            rows.append({
                "model": r["model"], "dataset": r["dataset"], "scheme": r["scheme"],
                "method": method, "step": step["step"],
                "target rate (x)": step["target_rate"], "pruning rate (x)": round(step["pruning_rate"], 1),
                "val accuracy (%)": _pct(step["val_accuracy"]), "test accuracy (%)": _pct(step["test_accuracy"]),
                CI_COLUMN: evidence.interval(network_of(r), step["test_accuracy"]),
                P_COLUMN: evidence.step_p_value(network_of(r), method, r["scheme"], step["step"]),
                # the selection rule's (paired upper bound of the loss); records older than it: the point rule
                "within tolerance": step_within_tolerance(step, r["tolerance_pp"]) if PAIRED_KEYS[-1] in step
                else step["val_accuracy"] >= threshold,
                "selected": selected,
                # dead units removed (same outputs): known for the selected step, whose compact model is built
                "rate after compaction (x)": round(step["compact_pruning_rate"], 1) if "compact_pruning_rate" in step
                else round(r["compact_pruning_rate"], 1) if admm and selected else None,
            })
    table = pd.DataFrame(rows)
    if not table.empty:
        table["scheme"] = pd.Categorical(table["scheme"], SCHEME_ORDER, ordered=True)
        table = table.sort_values(["model", "dataset", "scheme", "method", "step"]).reset_index(drop=True)
    return table


def admm_against_magnitude(prune_records: Iterable[dict[str, Any]], magnitude_records: Iterable[dict[str, Any]]) -> str:
    """One sentence per network: the selected irregular rate of ADMM against the magnitude baseline's, at
    the same rates, epochs and tolerance (what ADMM adds over the simplest method)."""
    admm = {network_of(r): r for r in prune_records if r["scheme"] == "irregular"}
    lines = []
    for m in magnitude_records:
        a = admm.get(network_of(m))
        if a is None:
            continue
        ratio = a["pruning_rate"] / m["pruning_rate"]
        lines.append(f"- {network_of(m)}: ADMM {a['pruning_rate']:.1f}x at {100 * a['test_accuracy']:.2f}% test, magnitude "
                     f"pruning {m['pruning_rate']:.1f}x at {100 * m['test_accuracy']:.2f}% test, both selected on validation "
                     f"with {m['epochs_per_step']} epochs per step: ADMM prunes {ratio:.2f}x as far"
                     + ("" if a["meets_tolerance"] and m["meets_tolerance"] else " (not both within tolerance)") + ".")
    return "\n".join(lines)


def quantization_table(records: Iterable[dict[str, Any]], evidence: Evidence | None = None) -> pd.DataFrame:
    """Table T4: accuracy of dense and pruned models at each weight bit width (1 = binary), with the 95%
    interval and McNemar's p against the dense fp32 model."""
    evidence = evidence or Evidence()
    rows = [
        {
            "model": r["model"], "dataset": r["dataset"], "scheme": r["scheme"], "weight bits": r["weight_bits"],
            "pruning rate (x)": round(r["pruning_rate"], 1), "test accuracy (%)": _pct(r["test_accuracy"]),
            CI_COLUMN: evidence.interval(network_of(r), r["test_accuracy"]),
            P_COLUMN: evidence.p_value(network_of(r), r["scheme"], r["weight_bits"]),
            "val accuracy (%)": _pct(r["val_accuracy"]),
            "before quantization, test (%)": _pct(r.get("source_test_accuracy")),
            # snapped onto the levels without training, or trained (ADMM + masked mapping, STE for binary dense)
            "method": r.get("method", "trained"),
        }
        for r in records
    ]
    table = pd.DataFrame(rows)
    if not table.empty:
        table["scheme"] = pd.Categorical(table["scheme"], SCHEME_ORDER, ordered=True)
        table = table.sort_values(["model", "dataset", "scheme", "weight bits"], ascending=[True, True, True, False])
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def use_style() -> None:
    """One look for every figure of the report."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.05)


def save_figure(fig: plt.Figure, folder: Path | str, name: str) -> dict[str, Path]:
    """Write ``fig`` as PNG and SVG (atomically) under ``folder``."""
    folder = Path(folder)
    paths = {}
    for ext in ("png", "svg"):  # one folder per format: DVC shows report/figures/png as image plots
        buffer = io.BytesIO()
        # No timestamps and fixed SVG element ids: the same data gives byte-identical files on a rerun.
        with plt.rc_context({"svg.hashsalt": "study"}):
            fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight",
                        metadata={"Date": None} if ext == "svg" else {"Software": None})
        paths[ext] = folder / ext / f"{name}.{ext}"
        atomic_write_bytes(paths[ext], buffer.getvalue())
    return paths


def plot_admm_convergence(record: dict[str, Any]) -> plt.Figure:
    """Figure F2: ||W - Z|| (relative), rho and validation accuracy over the Z/U updates of every step."""
    history = pd.DataFrame(record["admm_history"])
    history["update (all steps)"] = range(1, len(history) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    sns.lineplot(data=history, x="update (all steps)", y="w_minus_z_relative", hue="target_rate", palette="viridis",
                 ax=axes[0], legend="full")
    axes[0].set(yscale="log", ylabel="||W - Z|| / ||W||", title="distance to the constraint set")
    axes[0].legend(title="step target (x)", fontsize="small")
    sns.lineplot(data=history, x="update (all steps)", y="rho", ax=axes[1], color="C1")
    axes[1].set(yscale="log", ylabel="rho", title="penalty (dynamic regularization)")
    sns.lineplot(data=history, x="update (all steps)", y=history["val_accuracy"] * 100, ax=axes[2], color="C2")
    axes[2].set(ylabel="validation accuracy (%)", title="accuracy during ADMM (before hard pruning)")
    fig.suptitle(f"F2 ADMM convergence: {record['model']} on {record['dataset']}, {record['scheme']} pruning")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_rate(structured: pd.DataFrame, baseline_test_accuracy: float, tolerance_pp: float) -> plt.Figure:
    """Figure F3: test accuracy against weight pruning rate per scheme; selected points ringed, with their compacted rate."""
    fig, ax = plt.subplots(figsize=(10, 5))
    method = structured["method"] if "method" in structured else pd.Series("ADMM", index=structured.index)
    data = structured.assign(scheme=structured["scheme"].astype(str)
                             + method.map(lambda m: "" if m == "ADMM" else f" ({m} baseline)"))
    sns.lineplot(data=data, x="pruning rate (x)", y="test accuracy (%)", hue="scheme", marker="o", ax=ax)
    chosen = data[data["selected"]]
    ax.scatter(chosen["pruning rate (x)"], chosen["test accuracy (%)"], s=180, facecolors="none", edgecolors="black",
               label="selected on validation")
    # The same selected models counted after compaction (dead units removed, identical outputs): the fair rate.
    ax.scatter(chosen["rate after compaction (x)"], chosen["test accuracy (%)"], s=90, marker="D", facecolors="none",
               edgecolors="black", linestyle="--", label="selected, after compaction")
    for _, row in chosen.dropna(subset=["rate after compaction (x)"]).iterrows():
        ax.annotate("", xy=(row["rate after compaction (x)"], row["test accuracy (%)"]),
                    xytext=(row["pruning rate (x)"], row["test accuracy (%)"]),
                    arrowprops={"arrowstyle": "->", "color": "black", "alpha": 0.5})
    ax.axhline(100 * baseline_test_accuracy, color="grey", linestyle="--", label="dense baseline")
    ax.axhline(100 * baseline_test_accuracy - tolerance_pp, color="grey", linestyle=":", label=f"baseline - {tolerance_pp} pp")
    ax.set(xscale="log", xlabel="weight pruning rate (total / non-zero weights, log scale)", ylabel="test accuracy (%)",
           title="F3 accuracy vs pruning rate per scheme: " + ", ".join(sorted(set(network_column(data)))))
    # plain rates (2, 3, 100), not 2x10^0: a short log axis (a small network's 1.5-6x) has no power of ten on it;
    # between powers of ten only 2, 3 and 5 are labelled, so the labels do not run into each other
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda value, _position: f"{value:g}" if f"{value:e}"[0] in "235" else ""))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no data hidden
    fig.tight_layout()
    return fig
