"""The front door: README.md is one page that links to the long form under docs/, and no link is broken."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def local_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


def test_readme_is_a_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the long form to docs/"
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 300 and not line.startswith("|")]
    assert not long, f"README.md lines {long} are longer than a sentence or two"
    assert "make paper" in "\n".join(lines) and "make test" in "\n".join(lines)


def test_every_docs_page_is_reached_from_the_readme() -> None:
    linked = {(ROOT / t.split("#")[0]).resolve() for t in local_links(ROOT / "README.md")}
    assert DOCS and not [p.name for p in DOCS if p.resolve() not in linked]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


README_CLAIMS = {"stores less": "stores less", "from DRAM": "read from DRAM", "on chip": "weights on chip",
                 "prior art": "prior art", "binarized": "binarized", "speedup": "speedup"}


@pytest.mark.parametrize("page, heading", [("README.md", "| claim of the paper |"), ("docs/results.md", "| claim | LeNet-5")])
def test_the_claims_tables_read_their_numbers_from_the_committed_claims(page: str, heading: str) -> None:
    """Every number in README's and the results page's claims tables stands in the report's claims table
    (report/tables/claims.csv, written by the report stage from results/) for the same claim and network: a
    hand-typed number that drifts fails here."""
    import re

    import pandas as pd

    claims = pd.read_csv(ROOT / "report" / "tables" / "claims.csv", keep_default_na=False)
    text = (ROOT / page).read_text()
    table = text[text.index(heading):].split("\n\n")[0].splitlines()[2:]
    networks = ["lenet5-mnist", "vgg6-fashion_mnist"]
    assert len(table) == len(README_CLAIMS)
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        key = next(k for k in README_CLAIMS if k in cells[0])
        row = claims[claims["claim"].str.contains(README_CLAIMS[key])].iloc[0]
        for network, cell in zip(networks, cells[1:]):
            source = " ".join(str(row[c]) for c in claims.columns if c.startswith(network))
            shown = {float(n) for n in re.findall(r"\d+\.\d+", source)}
            for number in re.findall(r"\d+\.\d+", cell):
                assert float(number) in shown, f"{page}, '{key}' for {network}: {number} is not in claims.csv ({source[:300]})"


def _values_in(node: object) -> list[float]:
    """Every number a results file holds: JSON numbers, CSV cells, and the numbers written inside text cells."""
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, str):
        text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", node)  # 10,661 is one number
        return [float(n) for n in re.findall(r"-?\d+\.?\d*(?:e[+-]?\d+)?", text)]
    if isinstance(node, dict):
        return [v for item in node.values() for v in _values_in(item)]
    if isinstance(node, list):
        return [v for item in node for v in _values_in(item)]
    return []


def _result_values() -> list[float]:
    """The numbers of the committed run: the report's tables, every stage's results and metrics, the published
    models' index."""
    import json

    import pandas as pd

    values: list[float] = []
    for path in [*(ROOT / "report" / "tables").glob("*.csv"), *(ROOT / "results").glob("*/*/*.csv"),
                 *(ROOT / "models" / "published").glob("*/index.csv")]:
        values += _values_in(pd.read_csv(path, dtype=str, keep_default_na=False).to_numpy().ravel().tolist())
    for path in [*(ROOT / "results").glob("**/*.json"), *(ROOT / "metrics").glob("**/*.json")]:
        values += _values_in(json.loads(path.read_text()))
    return sorted({v for raw in values for v in (raw, 100 * raw)})


# Sections of the pages whose every decimal number is a result (the rest cite parameters and definitions)
RESULT_SECTIONS = [("docs/results.md", "## The verdicts", None), ("README.md", "## What it finds", "## Two commands")]


@pytest.mark.parametrize("page, start, end", RESULT_SECTIONS)
def test_every_decimal_number_in_the_results_sections_stands_in_the_committed_results(page: str, start: str,
                                                                                       end: str | None) -> None:
    """A number typed on a page (99.12%, 14.5 KB, 1.35x) must be some value of the committed run rounded to the
    digits shown (a fraction counts as its percentage too): a page left behind by a rerun fails here. Integers are
    left out (counts, widths, seeds: too easily matched by chance to be a check)."""
    import bisect

    text = (ROOT / page).read_text()
    section = text[text.index(start):text.index(end) if end else None]
    section = re.sub(r"\(\S+\.(?:md|png|csv)\)|`[^`]*`", "", section)  # links and code name files, not results
    values = _result_values()
    missing = []
    for number in sorted(set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)", section.replace(",", "")))):
        half = 0.5 * 10 ** -len(number.split(".")[1]) + 1e-9
        at = bisect.bisect_left(values, float(number) - half)
        if at == len(values) or values[at] > float(number) + half:
            missing.append(number)
    assert not missing, f"{page}, from '{start}': numbers not in the committed results: {missing}"
