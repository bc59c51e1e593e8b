"""The lock file: it pins every dependency pyproject.toml names, within its range, and this environment matches it."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tools.lock import MARKER, lock_lines


def _locked() -> dict[str, Requirement]:
    lines = [line for line in (REPO / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    locked = _locked()
    for requirement in declared:
        pinned = locked.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in requirements.lock: run `make lock`"
        (spec,) = pinned.specifier
        assert spec.operator == "==" and requirement.specifier.contains(spec.version, prereleases=True), \
            f"requirements.lock pins {pinned}, outside pyproject.toml's {requirement}: run `make lock`"


def test_this_environment_is_the_locked_one() -> None:
    for name, requirement in _locked().items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (spec,) = requirement.specifier
        assert metadata.version(name) == spec.version, f"{name}: installed {metadata.version(name)}, locked {spec.version}"


def test_cuda_libraries_carry_the_linux_marker() -> None:
    lines = lock_lines("nvidia-cublas==13.1.1.3\ntriton==3.8.0\nnumpy==2.4.6\n-e git+x#egg=study\n")
    assert lines == ["numpy==2.4.6", f"nvidia-cublas==13.1.1.3{MARKER}", f"triton==3.8.0{MARKER}"]
