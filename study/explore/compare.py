"""The explorer's compare mode: two choices on the same layer side by side, and the rate at which the second one
matches the first one's one-shot accuracy (the question a class asks: this irregular layer against that
channel-pruned one, at the same accuracy).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from study.explore.layer import Choice
from study.explore.session import Explorer

MAX_RATE = 1000.0  # the explorer's slider ends here
MATCH_STEPS = 12  # bisection steps over log(rate): 1000x in 12 halvings lands within ~2% of the rate


def side_by_side(session: Explorer, first: Choice, second: Choice) -> dict[str, dict[str, Any]]:
    """Storage (bits, KB), energy (nJ) and one-shot validation accuracy of each choice; both on ``first``'s layer."""
    second = dataclasses.replace(second, layer=first.layer)
    out = {}
    for key, choice in (("first", first), ("second", second)):
        view = session.view(choice)
        out[key] = {"choice": choice, "total_bits": int(view["storage"]["total_bits"]),
                    "kb": view["storage"]["total_bits"] / 8 / 1024, "energy_nj": sum(view["energy_pj"].values()) / 1000,
                    "val_accuracy": float(view["val_accuracy"]), "layer_rate": float(view["layer_rate"])}
    return out


def matching_rate(session: Explorer, first: Choice, second: Choice, steps: int = MATCH_STEPS) -> tuple[float, dict[str, Any]]:
    """The highest rate of ``second``'s scheme (its bits and index format kept) whose one-shot validation accuracy
    is at least ``first``'s, by bisection over log(rate), and the side-by-side numbers there.

    One-shot accuracy falls as the rate grows (up to the noise of a few images on a small validation subset), so
    bisection finds where the second choice stops matching. At 1x the layer is as trained: when even that is below
    the first choice's accuracy (quantization alone costs more), the answer is 1x.
    """
    target = session.view(first)["val_accuracy"]
    second = dataclasses.replace(second, layer=first.layer)

    def reaches(rate: float) -> bool:
        return session.view(dataclasses.replace(second, rate=rate))["val_accuracy"] >= target

    low, high = 0.0, math.log(MAX_RATE)  # log(1x) reaches unless quantization alone loses more than the first
    if reaches(MAX_RATE):
        low = high
    else:
        for _ in range(steps):
            middle = (low + high) / 2
            if reaches(math.exp(middle)):
                low = middle
            else:
                high = middle
    rate = round(math.exp(low), 2)
    return rate, side_by_side(session, first, dataclasses.replace(second, rate=rate))


def compare_answer(session: Explorer) -> str:
    """Exercise: the busiest conv layer channel-pruned at 4x, 4-bit, against irregular pruning at the same one-shot
    accuracy: the rate irregular pruning reaches there and which of the two stores fewer bits."""
    name = session.busiest_conv_layer
    first = Choice(name, "channel", 4.0, 4)
    rate, numbers = matching_rate(session, first, Choice(name, "irregular", 4.0, 4))
    a, b = numbers["first"], numbers["second"]
    smaller = "irregular" if b["total_bits"] < a["total_bits"] else "channel"
    return (f"Layer {name}, 4-bit weights, one shot on {len(session.val):,} validation images: channel pruning at 4x "
            f"keeps {100 * a['val_accuracy']:.2f}% and stores {a['total_bits']:,} bits. Irregular pruning matches that "
            f"accuracy up to {rate:g}x ({100 * b['val_accuracy']:.2f}%), where it stores {b['total_bits']:,} bits: "
            f"{smaller} pruning stores less at the same accuracy, {b['energy_nj']:.2f} against {a['energy_nj']:.2f} nJ "
            "of energy (irregular against channel).")
