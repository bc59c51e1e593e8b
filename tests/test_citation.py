"""CITATION.cff is valid Citation File Format 1.2.0 (what GitHub's "Cite this repository" reads), and LICENSE is
the license pyproject.toml declares."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The schema of https://citation-file-format.github.io/1.2.0/schema.json (CC-BY-4.0), as cffconvert 2.0.0 ships it:
# cffconvert itself needs jsonschema < 4, which the lock cannot hold beside Jupyter's.
SCHEMA = Path(__file__).parent / "data" / "citation-file-format-1.2.0.schema.json"


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())


def test_citation_file_is_valid_cff_1_2_0() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(citation())]
    assert not errors, "CITATION.cff:\n" + "\n".join(errors)


def test_the_schema_would_catch_a_broken_citation() -> None:
    broken = citation()
    del broken["authors"]
    broken["cff-version"] = "1.1.0"
    assert len(list(validator().iter_errors(broken))) >= 2


def test_citation_cites_the_paper_and_agrees_with_the_package() -> None:
    cff = citation()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
    paper = cff["references"][0]
    assert paper["title"] == "Non-structured DNN Weight Pruning Considered Harmful"
    assert paper["doi"] == "10.48550/arXiv.1907.02124"


@pytest.mark.parametrize("needle", ["MIT License", "Permission is hereby granted, free of charge",
                                    "THE SOFTWARE IS PROVIDED \"AS IS\""])
def test_license_is_the_mit_text(needle: str) -> None:
    assert needle in (ROOT / "LICENSE").read_text()
