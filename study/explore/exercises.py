"""Exercises for a class on compression trade-offs, each with an answer computed on the model at hand.

The questions name layers by role (the largest layer, the conv layer with the most MACs), so they read
the same for any model; the answers come from the same functions as the explorer's views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from study.compression import nm
from study.explore.figures import ENERGY_LABELS
from study.explore.layer import Choice, compress
from study.explore.session import Explorer


@dataclass(frozen=True)
class Exercise:
    title: str
    question: str
    look_for: str
    answer: Callable[[Explorer], str]


def irregular_bits(weight: torch.Tensor, keep: int, bits: int) -> int:
    """Stored bits of ``weight`` pruned to its ``keep`` largest magnitudes and quantized (cheapest format)."""
    return int(compress(weight, "irregular", weight.numel() / keep, bits)[-1]["total_bits"])


def structured_bits(weight: torch.Tensor, scheme: str, rate: float, bits: int) -> int:
    """Stored bits of ``weight`` pruned by a structured scheme at ``rate``, or by an N:M pattern (its own rate)."""
    return int(compress(weight, scheme, rate, bits)[-1]["total_bits"])


def break_even_rate(weight: torch.Tensor, scheme: str, rate: float, bits: int) -> tuple[float, int, int]:
    """The lowest irregular rate whose stored bits do not exceed the ``scheme`` layer's at ``rate`` (a structured
    scheme, or an N:M pattern): (irregular rate, irregular bits, the other layer's bits).

    Bisection over the kept count: stored bits fall as fewer weights are kept (up to run-length rounding and
    codebook size), so the search ends where the irregular layer first fits the structured layer's bits.
    """
    target = structured_bits(weight, scheme, rate, bits)
    fits, too_many = 1, weight.numel()  # keeping 1 weight always fits; keeping all cannot beat a pruned layer
    fits_bits = irregular_bits(weight, fits, bits)
    if fits_bits > target:
        return float("inf"), fits_bits, target
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        middle_bits = irregular_bits(weight, middle, bits)
        if middle_bits <= target:
            fits, fits_bits = middle, middle_bits
        else:
            too_many = middle
    return weight.numel() / fits, fits_bits, target


def _break_even_answer(session: Explorer) -> str:
    name = session.largest_layer
    rate, irregular, structured = break_even_rate(session.layers[name].weight.detach(), "filter", 4.0, 4)
    return (f"Layer {name}, 4-bit weights: the filter-pruned layer at 4x stores {structured:,} bits. Irregular pruning "
            f"stores as little only from {rate:.1f}x ({irregular:,} bits), {rate / 4:.1f} times the filter rate: "
            "the index bits cost that much extra pruning.")


def _index_width_answer(session: Explorer) -> str:
    name = session.largest_layer
    weight = session.layers[name].weight.detach()
    lines = []
    best = session.view(Choice(name, "irregular", 20.0, 4, "rel_csc"))["storage"]
    for width in (2, best["index_bits"], 8):
        row = session.view(Choice(name, "irregular", 20.0, 4, "rel_csc", width))["storage"]
        lines.append(f"{width}-bit runs: {row['total_bits']:,} bits, of which fillers {row['fillers']:,} and indices {row['indices']:,}")
    return (f"Layer {name} ({weight.numel():,} weights) at 20x, 4-bit weights, relative-index CSC. The cheapest run "
            f"width is {best['index_bits']} bits. " + "; ".join(lines) + ". Narrow runs need many fillers, wide runs "
            "waste bits on every entry.")


def _bound_answer(session: Explorer) -> str:
    name = session.largest_layer
    row = session.view(Choice(name, "irregular", 50.0, 4))["storage"]
    structure = row["pointers"] + row["indices"] + row["fillers"]
    return (f"Layer {name} at 50x, 4-bit weights, cheapest format {row['format']}: structure (pointers, indices, fillers) "
            f"takes {structure:,} of {row['total_bits']:,} bits ({100 * structure / row['total_bits']:.0f}%), "
            f"{structure / row['ideal_index_bits']:.2f} times log2 C(n,k) = {row['ideal_index_bits']:,.0f} bits. The "
            "bound is what an ideal code spends on an average mask of that size; a particular mask can sit below it.")


def _energy_answer(session: Explorer) -> str:
    name = session.busiest_conv_layer
    parts = []
    for scheme in ("irregular", "channel"):
        energy = session.view(Choice(name, scheme, 4.0, 8))["energy_pj"]
        top = max(energy, key=energy.get)
        parts.append(f"{scheme}: {sum(energy.values()) / 1000:.2f} nJ, most in {ENERGY_LABELS[top]} ({100 * energy[top] / sum(energy.values()):.0f}%)")
    return f"Layer {name} at 4x, 8-bit weights: " + "; ".join(parts) + "."


def _nm_answer(session: Explorer) -> str:
    # the largest layer 2:4 applies to (its reduction length a multiple of 4), as the pipeline prunes it
    name = max((n for n, layer in session.layers.items() if nm.applies(layer.weight, 4)),
               key=lambda n: session.layers[n].weight.numel())
    weight = session.layers[name].weight.detach()
    semi = session.view(Choice(name, "2:4", 2.0, 8))["storage"]
    irregular = session.view(Choice(name, "irregular", 2.0, 8))["storage"]
    where = irregular["indices"] + irregular["fillers"] + irregular["pointers"]
    rate, irregular_bits, semi_bits = break_even_rate(weight, "2:4", 2.0, 8)
    costlier = "2:4's metadata" if semi["indices"] > where else "irregular pruning's index"
    return (f"Layer {name}, 8-bit weights, 2x: 2:4 stores {semi['total_bits']:,} bits, {semi['indices']:,} of them metadata "
            f"({semi['format']}: which 2 of each 4 are kept); irregular pruning stores {irregular['total_bits']:,} bits, "
            f"{where:,} of them saying where the weights are ({irregular['format']}). {costlier.capitalize()} costs more. "
            f"Irregular pruning stores as few bits as 2:4 at 2x only from {rate:.2f}x on ({irregular_bits:,} bits): "
            "below that, the fixed small index of N:M wins.")


def _accuracy_answer(session: Explorer) -> str:
    name = session.largest_layer
    parts = [f"{scheme}: {100 * session.view(Choice(name, scheme, 10.0, 4))['val_accuracy']:.2f}%"
             for scheme in ("irregular", "filter", "column")]
    return (f"Layer {name} at 10x, 4-bit weights, no retraining, validation accuracy on {len(session.val):,} images "
            f"(unchanged model {100 * session.baseline_accuracy:.2f}%): " + ", ".join(parts) + ". Irregular pruning "
            "keeps the largest weights wherever they are; structured pruning must drop whole groups, so it loses more "
            "before retraining. ADMM and retraining (the pipeline) close much of that gap.")


EXERCISES = (
    Exercise("Break-even rate", "Take the largest layer at 4-bit weights and filter-prune it at 4x. At what irregular "
             "pruning rate does the irregular layer store as few bits as the filter-pruned one?",
             "Set the scheme to filter and note the storage; switch to irregular and raise the rate until the totals meet.",
             _break_even_answer),
    Exercise("Index width", "Irregular, 20x, 4-bit weights, relative-index CSC: which run-length width stores the "
             "fewest bits, and what happens with 2-bit or 8-bit runs?",
             "Watch the fillers (red) grow as the runs narrow, and the indices (orange) as they widen.",
             _index_width_answer),
    Exercise("The bound", "Irregular at 50x, 4-bit weights: what share of the stored bits describe where the weights "
             "are, and how close does the best format come to log2 C(n,k)?",
             "Compare the stored bar with the hatched bound bar.", _bound_answer),
    Exercise("Where the energy goes", "The conv layer with the most MACs at 4x and 8-bit weights: how much energy do "
             "irregular and channel pruning spend, and on what?",
             "Read the energy panel: MACs, index decoding, SRAM and DRAM reads.", _energy_answer),
    Exercise("Accuracy without retraining", "The largest layer at 10x and 4-bit weights, pruned in one shot: which "
             "scheme keeps the most accuracy?", "Read the validation accuracy in the figure title.", _accuracy_answer),
    Exercise("At the same accuracy", "Compare mode: channel-prune the conv layer with the most MACs at 4x, 4-bit, "
             "against irregular pruning, 4-bit. At what irregular rate does its one-shot accuracy still match, and which "
             "of the two stores fewer bits there?",
             "Turn on compare, set the second choice to irregular and press the button that matches the accuracy.",
             lambda session: _compare_answer(session)),
    Exercise("N:M against irregular", "At 8-bit weights and 2x, on the largest layer 2:4 sparsity applies to: which "
             "costs more bits, 2:4's metadata or irregular pruning's index? From which irregular rate on does irregular "
             "pruning store fewer bits than 2:4?",
             "Set the scheme to 2:4 and read the indices row; switch to irregular at 2x (indices, fillers, pointers), then "
             "raise its rate until its total falls below 2:4's.", _nm_answer),
)


def _compare_answer(session: Explorer) -> str:
    from study.explore.compare import compare_answer  # compare builds on this module's neighbours, not on it

    return compare_answer(session)
