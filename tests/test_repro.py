"""`make paper`'s progress lines: stage k of N and the time left, from the previous run's stage times."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from study.repro import Plan, Progress, format_minutes, previous_wall_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counts_stages_and_estimates_from_the_previous_run() -> None:
    clock = FakeClock()
    progress = Progress(Plan(["a", "b", "c"], {"a": 120.0, "b": 240.0, "c": None}), clock=clock)
    assert progress.feed("Running stage 'a':\n") == "== stage 1 of 3: a · about 6 min left =="
    assert progress.feed("some output of a\n") is None
    clock.now = 240.0  # a took twice as long as last time: the rest is expected to as well
    assert progress.feed("Running stage 'b':\n") == "== stage 2 of 3: b · about 8 min left =="


def test_one_long_stage_does_not_stretch_every_estimate() -> None:
    clock = FakeClock()
    progress = Progress(Plan(["a", "b", "c", "d"], {"a": 60.0, "b": 60.0, "c": 60.0, "d": 600.0}), clock=clock)
    for stage, took in (("a", 60.0), ("b", 66.0), ("c", 2000.0)):  # c was paused for half an hour
        progress.feed(f"Running stage '{stage}':")
        clock.now += took
    assert progress.feed("Running stage 'd':") == "== stage 4 of 4: d · about 11 min left =="  # 600 s x 1.1


def test_short_stages_measure_start_up_not_pace() -> None:
    """Short stages spend most of their time starting (kernel, imports) that their recorded wall_s leaves out:
    they must not multiply the long stages' estimate, only add their start-up to each stage still to come."""
    clock = FakeClock()
    progress = Progress(Plan(["a", "b", "c", "d"], {"a": 5.0, "b": 5.0, "c": 5.0, "d": 570.0}), clock=clock)
    for stage in "abc":
        progress.feed(f"Running stage '{stage}':")
        clock.now += 35.0
    assert progress.pace() == 1.0 and progress.startup_s() == 30.0
    assert progress.feed("Running stage 'd':") == "== stage 4 of 4: d · about 10 min left =="  # 570 s + 30 s


def test_a_stage_dvc_skips_leaves_the_count() -> None:
    progress = Progress(Plan(["a", "b", "c"], {"a": 60.0, "b": 60.0, "c": 60.0}), clock=FakeClock())
    progress.feed("Running stage 'a':")
    progress.feed("Stage 'b' didn't change, skipping")
    assert progress.feed("Running stage 'c':") == "== stage 2 of 2: c · about 1 min left =="


def test_without_previous_times_it_says_so() -> None:
    progress = Progress(Plan(["a"], {"a": None}), clock=FakeClock())
    assert progress.feed("Running stage 'a':") == (
        "== stage 1 of 1: a · no estimate yet (no stage times from a previous run) ==")


def test_an_unplanned_stage_is_counted() -> None:
    progress = Progress(Plan([], {}), clock=FakeClock())
    assert progress.feed("Running stage 'x':").startswith("== stage 1 of 1: x ·")


def test_previous_wall_s_reads_metrics_and_ignores_what_is_not_a_time(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"wall_s": 30.5}))
    (tmp_path / "b.json").write_text(json.dumps({"accuracy": 0.9}))
    (tmp_path / "c.json").write_text("not json")
    assert previous_wall_s([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json", tmp_path / "none"]) == 30.5
    assert previous_wall_s([tmp_path / "b.json"]) is None
    assert format_minutes(20) == "about 1 min" and format_minutes(4200) == "about 1 h 10 min"


STAGE_SCRIPT = textwrap.dedent("""
    import json, pathlib, sys
    name, source = sys.argv[1], pathlib.Path(sys.argv[2])
    pathlib.Path("out").mkdir(exist_ok=True); pathlib.Path("metrics").mkdir(exist_ok=True)
    pathlib.Path(f"out/{name}.txt").write_text(source.read_text().split("#")[0])
    pathlib.Path(f"metrics/{name}.json").write_text(json.dumps({"wall_s": 600}))
    """)

DVC_YAML = textwrap.dedent("""
    stages:
      first:
        cmd: python stage.py first input.txt
        deps: [stage.py, input.txt]
        outs: [out/first.txt, {metrics/first.json: {cache: false}}]
      second:
        cmd: python stage.py second out/first.txt
        deps: [stage.py, out/first.txt]
        outs: [out/second.txt, {metrics/second.json: {cache: false}}]
    """)


def repro(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.repro"], cwd=repo, capture_output=True, text=True,
                          timeout=300)


def test_a_real_pipeline_shows_each_stage_and_then_the_last_runs_times(tmp_path: Path) -> None:
    """Two chained stages under real DVC: counted, estimated from the first run's metrics, skipped when unchanged."""
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "input.txt").write_text("data")
    first = repro(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== 2 stage(s) to run; no stage times from a previous run ==" in first.stdout
    assert "== stage 1 of 2: first · no estimate yet" in first.stdout
    assert "== stage 2 of 2: second · no estimate yet" in first.stdout
    assert first.stdout.index("== stage 1 of 2") < first.stdout.index("Running stage 'first'")

    (tmp_path / "input.txt").write_text("data# a comment the stage ignores: second's input comes out the same")
    again = repro(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "== stage 1 of 2: first · about 20 min left ==" in again.stdout  # 600 s each in the metrics
    assert "Stage 'second' didn't change, skipping" in again.stdout
    assert "stage 2 of" not in again.stdout

    (tmp_path / "stage.py").write_text("raise SystemExit(3)")
    failed = repro(tmp_path)
    assert failed.returncode != 0 and "failed to reproduce" in failed.stdout


def test_nothing_is_counted_downstream_of_the_params_check(tmp_path: Path, monkeypatch) -> None:
    """The params check writes the same bytes whenever it passes: an edited params file plans that one stage,
    not the whole pipeline behind it."""
    from study.repro import plan_repro

    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "params.yaml").write_text("rate: 1\n")
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""
        stages:
          validate:
            cmd: python -c "open('valid.txt', 'w').write('passed')"
            params: [rate]
            outs: [{valid.txt: {cache: false}}]
          first:
            cmd: python stage.py first valid.txt
            deps: [stage.py, valid.txt]
            outs: [out/first.txt, {metrics/first.json: {cache: false}}]
        """))
    assert repro(tmp_path).returncode == 0
    monkeypatch.chdir(tmp_path)  # stages are addressed relative to where one stands, as `make paper` does
    (tmp_path / "params.yaml").write_text("rate: 2\n")
    assert plan_repro(tmp_path).stages == ["validate"]
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT + "\n# edited\n")
    assert plan_repro(tmp_path).stages == ["validate", "first"]
