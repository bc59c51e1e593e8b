"""dvc.yaml cannot drift from the code: each stage depends on exactly the study modules it imports,
names no baseline, and pastes no parameter into its shell command."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.dependencies import study_files

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def _entry_module(stage: dict) -> str:
    match = re.fullmatch(r"python -m study\.stages\.launch (\w+)", _body(stage)["cmd"])
    assert match, f"stage command {_body(stage)['cmd']!r} must be the launcher with a literal stage kind"
    kind = match.group(1)
    if kind == "validate":  # run by the launcher itself, no notebook: the check of params.yaml
        return "study.core.params"
    return "study.stages.quantize" if kind == "quantize_dense" else f"study.stages.{kind}"


def _runs_nothing(node: ast.stmt) -> bool:
    """A top-level statement that does nothing on import that a stage could notice."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # the docstring
        return True
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        return True
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
        return not node.orelse
    if isinstance(node, ast.ImportFrom) and node.module == "typing" and [a.name for a in node.names] == ["TYPE_CHECKING"]:
        return True
    return isinstance(node, ast.FunctionDef) and not node.decorator_list


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_exactly_the_modules_it_imports(name: str) -> None:
    stage = _body(STAGES[name])
    imported = study_files(_entry_module(STAGES[name])) | study_files("study.stages.launch")
    # Package __init__ files run on import too; they must run no code, so they need not be dependencies: a docstring,
    # imports for type checkers only, and functions (whose bodies run only when called, e.g. study.load) are allowed.
    for init in (p for p in imported if p.name == "__init__.py"):
        body = [n for n in ast.parse(init.read_text()).body if not _runs_nothing(n)]
        assert not body, f"{init.relative_to(REPO)} holds code that runs on import: move it into a module"
    needed = {str(p.relative_to(REPO)) for p in imported if p.name != "__init__.py"}
    declared = {d for d in stage["deps"] if d.startswith("study/")}
    assert needed - declared == set(), f"{name}: dvc.yaml misses imported modules {sorted(needed - declared)}"
    assert declared - needed == set(), f"{name}: dvc.yaml lists modules the stage does not import {sorted(declared - needed)}"
    if name != "validate":
        notebook = "quantize" if name == "quantize_dense" else name
        assert f"notebooks/{notebook}.ipynb" in stage["deps"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_baseline_name_and_no_parameter_in_a_command(name: str) -> None:
    text = yaml.safe_dump(STAGES[name])
    assert "lenet5" not in text, f"{name}: iterate over params.yaml (baselines, compare), do not name a baseline"
    assert "${" not in _body(STAGES[name])["cmd"], f"{name}: a parameter pasted into the shell command"


def test_stage_kinds_match_the_launcher() -> None:
    from study.stages.launch import NOTEBOOKS, VALIDATE

    assert set(STAGES) == set(NOTEBOOKS) | {VALIDATE}


def test_every_stage_waits_for_the_check_of_params_yaml() -> None:
    """DVC removes a stage's outputs before its command runs: only a check that runs first keeps them."""
    from study.stages.launch import VALID_STAMP

    validate = STAGES["validate"]
    assert [list(o)[0] if isinstance(o, dict) else o for o in validate["outs"]] == [VALID_STAMP]
    assert validate["params"] == [{"params.yaml": None}]  # every key of the file
    late = [name for name, stage in STAGES.items() if name != "validate" and VALID_STAMP not in _body(stage)["deps"]]
    assert not late, f"stages that may start before params.yaml is checked: {late}"


def _owner(stage_name: str, baselines: list[str]) -> str | None:
    """The compared baseline a stage belongs to (the longest that its item name starts with), or None."""
    item = stage_name.partition("@")[2]
    matches = [b for b in baselines if item == b or item.startswith(f"{b}-")]
    return max(matches, key=len, default=None)


def test_a_baseline_stage_reads_nothing_another_baseline_writes() -> None:
    """Rerunning, recalibrating or adding one network leaves every stage of the others up to date: no dependency
    of a stage of one baseline is, contains or lies inside an output of a stage of another."""
    from pathlib import PurePosixPath

    from dvc.repo import Repo

    baselines = yaml.safe_load((REPO / "params.yaml").read_text())["compare"]["baselines"]
    assert len(baselines) >= 2, "the check needs two compared baselines"
    with Repo(str(REPO)) as repo:
        stages = [(s.name, _owner(s.name, baselines), s) for s in repo.index.stages if hasattr(s, "name")]  # not data.dvc
    outputs = [(name, owner, PurePosixPath(o.def_path)) for name, owner, s in stages if owner for o in s.outs]
    crossing = []
    for name, owner, stage in stages:
        if owner is None:
            continue
        for dep in stage.deps:
            path = PurePosixPath(dep.def_path)
            crossing += [f"{name} reads {path}, which holds {out} of {writer}" for writer, other, out in outputs
                         if other != owner and (out.is_relative_to(path) or path.is_relative_to(out))]
    assert not crossing, "\n".join(crossing[:5])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_baseline_stage_does_not_read_the_list_of_baselines(name: str) -> None:
    """A stage of one network that declared `compare` (or `baselines`) whole would rerun whenever a network is
    added or dropped; it names the keys it reads (e.g. compare.schemes, baselines.<its baseline>)."""
    stage = STAGES[name]
    if "matrix" not in stage or "baseline" not in stage["matrix"]:
        return  # not a stage of one baseline (train iterates over `baselines`, the report reads them all)
    declared = {p for p in stage.get("params", []) if isinstance(p, str)}
    assert not declared & {"compare", "compare.baselines", "baselines"}, f"{name} declares {sorted(declared)}"
