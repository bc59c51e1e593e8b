"""Benchmark: the stages' own work in a run, by stage kind and network, against an earlier run.

    python benchmarks/stage_work.py [--against <git commit>] [--markdown]

Every stage records its wall time (``wall_s``) in ``metrics/<kind>/...json``; their sum is the run's stage work
(DVC's bookkeeping and each notebook kernel's start come on top). With ``--against``, the same sums from the
metrics files committed at that commit, and the ratio: the budget for new work is stated as a share of the
stage work, and a machine's speed differs from day to day, so compare a stage that did not change (``train``)
before reading the rest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _network(relative: str) -> str:
    """``metrics/prune/lenet5-mnist/irregular.json`` -> lenet5-mnist; ``metrics/train/vgg6-fashion_mnist.json`` ->
    vgg6-fashion_mnist; ``metrics/summary.json`` has no stage."""
    parts = relative.split("/")
    return parts[2] if len(parts) > 3 else parts[2].removesuffix(".json")


def stage_work(files: dict[str, str]) -> dict[tuple[str, str], float]:
    """(kind, network) -> seconds, from metrics files' contents by relative path."""
    work: dict[tuple[str, str], float] = defaultdict(float)
    for relative, text in files.items():
        parts = relative.split("/")
        if len(parts) < 3 or not relative.endswith(".json"):
            continue
        try:
            seconds = json.loads(text).get("wall_s")
        except ValueError:
            continue
        if isinstance(seconds, (int, float)):
            work[(parts[1], _network(relative))] += float(seconds)
    return dict(work)


def current_files() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "metrics").rglob("*.json")}


def committed_files(commit: str) -> dict[str, str]:
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "metrics"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{commit}:{n}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".json")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="a git commit whose committed metrics are the earlier run")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    now = stage_work(current_files())
    before = stage_work(committed_files(args.against)) if args.against else {}
    keys = sorted(set(now) | set(before))
    rows = [(kind, network, now.get((kind, network), 0.0) / 60, before.get((kind, network), 0.0) / 60)
            for kind, network in keys]
    total_now, total_before = sum(r[2] for r in rows), sum(r[3] for r in rows)
    if args.markdown:
        print("| stage | network | now (min) | before (min) |\n|---|---|---|---|")
        for kind, network, a, b in rows:
            print(f"| {kind} | {network} | {a:.1f} | {b:.1f} |")
        print(f"| all | | {total_now:.1f} | {total_before:.1f} |")
    else:
        for kind, network, a, b in rows:
            print(f"{kind:<15} {network:<22} {a:7.1f} min" + (f"   before {b:7.1f} min" if args.against else ""))
        print(f"{'stage work':<38} {total_now:7.1f} min" + (f"   before {total_before:7.1f} min, ratio "
                                                             f"{total_now / total_before:.2f}" if total_before else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
