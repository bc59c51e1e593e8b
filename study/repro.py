"""``dvc repro`` with one line a person can follow at each stage's start: stage k of N and the time left.

A full run is about two hours of stages on 2 cores, and each stage's own output says nothing about the rest.
Before DVC starts, this plans what it will run (the stages whose inputs changed and every stage downstream of
them, in DVC's own order); while it runs, each "Running stage" line of DVC's output gets a line before it:

    == stage 14 of 112: prune@lenet5-mnist-irregular · about 70 min left ==

The time left is the previous run's wall time of every stage still to come (the ``wall_s`` of each stage's
metrics file, committed with the results), scaled by today's pace (``Progress.pace``), plus each stage's start-up
as measured so far (``Progress.startup_s``). A stage DVC finds unchanged after all (its inputs came out the same)
leaves the count. Everything DVC prints passes through unchanged; the exit status is DVC's.

Run it as ``python -m study.repro [dvc repro options]`` (``make paper`` does).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RUNNING = re.compile(r"^Running stage '(?P<stage>[^']+)':")
SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' (didn't change, skipping|is cached - skipping run)")
# A stage's time here includes what its recorded ``wall_s`` leaves out: DVC hashing, papermill starting a kernel,
# imports (about half a minute). Only stages this long last time measure the pace; the shorter ones measure that
# start-up, which is added once per stage still to come.
LONG_STAGE_S = 60.0
# Stages that write the same bytes whenever they pass, so that DVC reruns nothing downstream of them: the params
# check (any edit of params.yaml reruns it; `make paper` runs the same check before DVC starts, so it passes).
SAME_OUTPUT_STAGES = frozenset({"validate"})


@dataclass
class Plan:
    """The stages DVC is expected to run, in its order, with last run's wall time of each (None: none known)."""

    stages: list[str]
    previous_s: dict[str, float | None]


def previous_wall_s(metrics_files: list[Path]) -> float | None:
    """A stage's wall time in the previous run: the ``wall_s`` its metrics files recorded (summed), if any."""
    times = []
    for path in metrics_files:
        try:
            value = json.loads(path.read_text()).get("wall_s")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, (int, float)) and value >= 0:
            times.append(float(value))
    return sum(times) if times else None


def is_metrics_file(path: str) -> bool:
    """Every stage writes its metrics (``wall_s`` among them) as ``metrics/<stage kind>/...json``."""
    return path.startswith("metrics/") and path.endswith(".json")


def plan_repro(root: Path, targets: list[str] | None = None) -> Plan:
    """Which pipeline stages ``dvc repro`` will run: the changed ones and all that depend on them, in DVC's order.

    Downstream stages are counted although DVC may find their inputs unchanged once the upstream stage reran;
    the count drops when DVC says so. Nothing is counted downstream of a stage in ``SAME_OUTPUT_STAGES``.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro as dvc_plan
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo, repo.lock:  # the lock DVC's own status takes: no other run may write meanwhile
        graph = get_active_graph(repo.index.graph)
        chosen = collect_stages(repo, targets or ["dvc.yaml"]) if targets else None
        order = dvc_plan(graph, chosen)
        changed = [stage for stage in order if isinstance(stage, PipelineStage) and stage.changed()]
        affected = set(changed)
        for stage in changed:
            if stage.name in SAME_OUTPUT_STAGES:
                continue
            affected |= nx.ancestors(graph, stage)  # DVC's edges point from a stage to what it depends on
        stages = [stage for stage in order if stage in affected and isinstance(stage, PipelineStage)]
        previous = {stage.addressing: previous_wall_s([root / str(out.def_path) for out in stage.outs
                                                       if out.metric or is_metrics_file(str(out.def_path))])
                    for stage in stages}
    return Plan([stage.addressing for stage in stages], previous)


def format_minutes(seconds: float) -> str:
    """Minutes as a person says them: 'about 3 min', 'about 1 h 10 min'."""
    minutes = max(1, round(seconds / 60))
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


@dataclass
class Progress:
    """Follows DVC's output line by line and says where the run is."""

    plan: Plan
    clock: Callable[[], float] = time.monotonic
    started: dict[str, float] = field(default_factory=dict)
    finished_s: dict[str, float] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    current: str | None = None

    def _close_current(self, now: float) -> None:
        if self.current is not None:
            self.finished_s[self.current] = now - self.started[self.current]
            self.current = None

    def _done_with_previous(self) -> list[str]:
        return [s for s in self.finished_s if self.plan.previous_s.get(s)]

    def pace(self) -> float:
        """This run's time over the previous run's: the median ratio over the finished stages that took at least
        ``LONG_STAGE_S`` last time (1 until one has). The median, not the ratio of sums: one stage that ran long
        (paused, a busy neighbour for a while, more steps than last time) must not stretch every estimate after it."""
        long_ones = [s for s in self._done_with_previous() if self.plan.previous_s[s] >= LONG_STAGE_S]
        if not long_ones:
            return 1.0
        return float(statistics.median(self.finished_s[s] / self.plan.previous_s[s] for s in long_ones))

    def startup_s(self) -> float:
        """What a stage takes here beyond its paced previous time (start-up): the median over finished stages."""
        done = self._done_with_previous()
        if not done:
            return 0.0
        pace = self.pace()
        return float(statistics.median(max(0.0, self.finished_s[s] - pace * self.plan.previous_s[s]) for s in done))

    def remaining_s(self, stage: str) -> tuple[float, bool]:
        """The expected time of this stage and every planned one after it (last run's time at today's pace, plus
        start-up, for each that has one); whether any of them had one."""
        names = self.plan.stages
        rest = names[names.index(stage):] if stage in names else [stage]
        known = [self.plan.previous_s.get(s) for s in rest if s not in self.skipped and s not in self.finished_s]
        known = [t for t in known if t is not None]
        return sum(known) * self.pace() + len(known) * self.startup_s(), bool(known)

    def line_for(self, stage: str, now: float) -> str:
        """The line printed as ``stage`` starts."""
        self._close_current(now)
        self.started[stage] = now
        self.current = stage
        ran = len(self.started)
        unplanned = [s for s in self.started if s not in self.plan.stages]
        total = len([s for s in self.plan.stages if s not in self.skipped]) + len(unplanned)
        left_s, known = self.remaining_s(stage)
        estimate = (f"{format_minutes(left_s)} left" if known
                    else "no estimate yet (no stage times from a previous run)")
        return f"== stage {ran} of {total}: {stage} · {estimate} =="

    def note_skipped(self, stage: str) -> None:
        """DVC found ``stage`` unchanged (or restored it from its run cache): it leaves the count."""
        if stage not in self.started:
            self.skipped.add(stage)

    def feed(self, line: str) -> str | None:
        """One line of DVC's output; returns the line to print before it, if any."""
        text = line.strip()
        if match := RUNNING.match(text):
            return self.line_for(match["stage"], self.clock())
        if match := SKIPPED.match(text):
            self.note_skipped(match["stage"])
        return None


def run(argv: list[str], root: Path = Path(".")) -> int:
    """Plan, then run ``dvc repro`` with ``argv`` and print the progress lines into its output."""
    targets = [a for a in argv if not a.startswith("-")]
    try:
        plan = plan_repro(root, targets or None)
    except Exception as error:  # noqa: BLE001 - a plan is a nicety: DVC itself reports what is wrong
        print(f"== no stage plan ({type(error).__name__}: {error}); running dvc repro without one ==", flush=True)
        plan = Plan([], {})
    if plan.stages:
        total_s = sum(t for t in plan.previous_s.values() if t is not None)
        known = sum(t is not None for t in plan.previous_s.values())
        print(f"== {len(plan.stages)} stage(s) to run; the previous run's times of {known} of them sum to "
              f"{format_minutes(total_s)} of stage work ==" if known else
              f"== {len(plan.stages)} stage(s) to run; no stage times from a previous run ==", flush=True)
    progress = Progress(plan)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the stages' own lines arrive as they are printed
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *argv], cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            if (before := progress.feed(line)) is not None:
                sys.stdout.write(before + "\n")
            sys.stdout.write(line)
            sys.stdout.flush()
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached DVC too (same process group): let it stop its stage cleanly
        return process.wait()


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
