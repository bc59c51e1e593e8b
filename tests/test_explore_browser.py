"""The classroom page as a learner sees it: Voilà serves notebooks/explore.ipynb, Chromium shows it, a click
changes the storage numbers on the page to exactly what the package computes for the new choice."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import papermill
import pytest

from study.explore import app
from study.explore.layer import Choice
from study.explore.session import Explorer, quick_model
from tests.conftest import REPO, write_tiny_params

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network and a root user (CI): no sandbox, no background connections, a fresh profile.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOTAL = ".explore-numbers [data-part='total_bits']"


def _browser_or_skip() -> None:
    if not Path(CHROMIUM).is_file():
        message = "Chromium is missing: install Debian's `chromium` package (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _voila(notebook: Path, folder: Path) -> Iterator[str]:
    """Voilà serving ``notebook`` from ``folder`` (its log there) until the block ends; yields the page's URL."""
    port = _free_port()
    log = (folder / "voila.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
                               "--Voila.ip=127.0.0.1"], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:  # any HTTP answer means the server is up (GET / would start a kernel: ask for a static path)
                urllib.request.urlopen(url + "favicon.ico", timeout=2)  # noqa: S310 (localhost)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"voila exited:\n{(folder / 'voila.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def served(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Explorer]]:
    """Voilà serving the explorer for a tiny model, and the same model opened in this process."""
    _browser_or_skip()
    folder = tmp_path_factory.mktemp("classroom")
    params = write_tiny_params(folder / "params.yaml", synthetic_root)
    candidate = quick_model(params, folder / "out")
    notebook = folder / "explore.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "explore.ipynb"), str(notebook), prepare_only=True,
                               parameters={"params_file": str(params), "out_root": str(folder / "out"),
                                           "model": str(candidate.checkpoint), "layer": "fc1", "scheme": "irregular",
                                           "rate": 20.0, "weight_bits": 4, "val_images": 40})
    with _voila(notebook, folder) as url:
        yield url, Explorer(candidate, val_images=40)


def _open(page: object, url: str, tries: int = 3) -> None:
    """Load the page until the explorer's numbers show. Now and then Voilà 0.5 starts a kernel and never sends
    it the notebook (voila-dashboards/voila#1311, #1446: an asynchronous race in the server); the page then
    spins for ever and a reload, with a new kernel, shows it. The test reloads as a learner would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        try:
            if attempt == 0:
                page.goto(url, wait_until="commit", timeout=60_000)
            else:
                page.reload(wait_until="commit", timeout=60_000)
            page.wait_for_selector(TOTAL, timeout=90_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the explorer's page showed no numbers after {tries} loads of {url}")


def _bits(page: object) -> int:
    return int(page.inner_text(TOTAL).replace(",", ""))


def _until_shown(page: object, action: Callable[[], None], bits: int, tries: int = 4) -> None:
    """Do ``action`` until the page shows ``bits`` as the stored total. Voilà renders the widgets while the
    kernel still runs the notebook; a control moved in that moment can go unheard, as a learner's first click
    would: the learner clicks again, and so does the test (each action sets a value, so repeating is harmless)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        action()
        try:
            page.wait_for_function(f"document.querySelector(\"{TOTAL}\").innerText == '{bits:,}'", timeout=20_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"after {tries} tries the page shows {page.inner_text(TOTAL)} stored bits, the package computes {bits:,}")


def test_a_click_changes_the_page_to_the_numbers_the_package_computes(served: tuple[str, Explorer]) -> None:
    from playwright.sync_api import sync_playwright

    url, session = served
    expected = {(scheme, bits): session.view(Choice("fc1", scheme, 20.0, bits))["storage"]["total_bits"]
                for scheme, bits in (("irregular", 4), ("channel", 4), ("channel", 8), ("2:4", 8))}
    assert len(set(expected.values())) == 4  # each move must show a different number
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            _open(page, url)
            assert _bits(page) == expected["irregular", 4]
            assert "import" not in page.inner_text("body")  # the page shows no code

            _until_shown(page, lambda: page.click(".explore-scheme button:has-text('channel')"), expected["channel", 4])
            _until_shown(page, lambda: page.select_option(".explore-bits select", label="8-bit"), expected["channel", 8])
            assert page.is_disabled(".explore-index-format select")  # structured layers have no index format
            _until_shown(page, lambda: page.click(".explore-scheme button:has-text('2:4')"), expected["2:4", 8])
        finally:
            browser.close()


COMPARED = ".explore-compared [data-compare='{side}-total_bits']"


@pytest.fixture(scope="module")
def served_fresh(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """Voilà serving the explorer as a fresh clone has it: no checkpoint anywhere, only published model files (as
    the export stage writes them: a dense fp32 safetensors file and an irregular 8-bit model file)."""
    from tests.test_explore import _publish

    _browser_or_skip()
    folder = tmp_path_factory.mktemp("fresh")
    params = write_tiny_params(folder / "params.yaml", synthetic_root)
    trained = Explorer(quick_model(params, tmp_path_factory.mktemp("elsewhere")), val_images=40)
    clone = folder / "clone"  # holds models/published/ and nothing else
    _publish(clone / "models" / "published" / "lenet5-mnist", trained)
    notebook = folder / "explore.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "explore.ipynb"), str(notebook), prepare_only=True,
                               parameters={"params_file": str(params), "out_root": str(folder / "out"),
                                           "published_root": str(clone), "layer": "conv2", "scheme": "channel",
                                           "rate": 4.0, "weight_bits": 4, "val_images": 40})
    with _voila(notebook, folder) as url:
        yield url, params, clone


def test_a_fresh_clone_lists_the_published_models_and_compares_two_choices(served_fresh: tuple[str, Path, Path]) -> None:
    from playwright.sync_api import sync_playwright

    from study.explore import compare
    from study.explore.session import published_models

    url, params, clone = served_fresh
    candidates = published_models(params, clone)
    assert candidates[0].label == "published: lenet5-mnist, dense, fp32"
    picked = next(c for c in candidates if c.label.startswith("published: lenet5-mnist, ADMM irregular")
                  and c.label.endswith("8-bit (picked)"))
    session = Explorer(picked, val_images=40)
    start = app.starting_point(session, "conv2")  # opening a stored model starts from its own scheme, bits, layer rate
    assert (start["scheme"], start["weight_bits"]) == ("irregular", 8)
    first = Choice("conv2", start["scheme"], start["rate"], start["weight_bits"])
    second = Choice("conv2", "irregular", 4.0, 4)
    expected = compare.side_by_side(session, first, second)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            _open(page, url)  # no checkpoint anywhere: the published dense model opened, nothing was trained
            options = page.eval_on_selector(".explore-model select",  # ipywidgets shows spaces as no-break spaces
                                            "s => [...s.options].map(o => o.text.replace(/\u00a0/g, ' '))")
            assert options[:len(candidates)] == [c.label for c in candidates]
            page.select_option(".explore-model select", label=picked.label)
            page.wait_for_selector(".explore-whole-model .explore-open-conv2", timeout=90_000)  # the whole-model view
            page.click(".explore-compare")  # the toggle is the button itself
            page.click(".explore-scheme2 button:has-text('irregular')")
            page.select_option(".explore-bits2 select", label="4-bit")
            for side in ("first", "second"):
                selector = COMPARED.format(side=side)
                page.wait_for_function(f"document.querySelector(\"{selector}\") && document.querySelector(\"{selector}\")"
                                       f".innerText == '{expected[side]['total_bits']:,}'", timeout=60_000)
        finally:
            browser.close()
