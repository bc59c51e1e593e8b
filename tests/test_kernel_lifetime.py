"""A stage's kernel cannot outlive its stage, and it talks over Unix sockets (study.stages.kernel); the launcher
prints what the notebook prints, without noise.

The launcher runs a tiny notebook that writes a line every 10 ms; the test SIGKILLs the launcher's process group,
as a hard kill of ``dvc repro`` does, and reads what the kernel wrote after that moment.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil

from study.stages.launch import _CellOutput
from tests.conftest import REPO

TICKS = """
import os, time
with open({path!r}, "a", buffering=1) as out:
    for _ in range({count}):
        out.write(f"{{time.time()}} {{os.getpid()}}\\n")
        time.sleep(0.01)
"""


def _ticking_notebook(folder: Path, ticks: Path, count: int) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(TICKS.format(path=str(ticks), count=count))]
    path = folder / "ticks.ipynb"
    nbformat.write(notebook, path)
    return path


def _launch(notebook: Path, executed: Path, **popen) -> subprocess.Popen:
    """``study.stages.launch.run_notebook`` in a process of its own, as a stage's launcher runs it."""
    code = ("import sys; from pathlib import Path; from study.stages.launch import run_notebook; "
            f"run_notebook(Path({str(notebook)!r}), Path({str(executed)!r}), {{}})")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, **popen)


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a dead kernel whose new parent has not reaped it yet has ended all the same)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _study_kernel_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("study-kernel-*")}


def test_a_hard_kill_of_the_stage_ends_its_kernel_at_once(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.txt"
    notebook = _ticking_notebook(tmp_path, ticks, count=6000)  # a minute of ticks: far longer than the test
    process = _launch(notebook, tmp_path / "run.ipynb", start_new_session=True,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (not ticks.exists() or len(ticks.read_text().splitlines()) < 5) and time.monotonic() < deadline:
        assert process.poll() is None, "the launcher ended before its kernel ticked"
        time.sleep(0.01)
    kernel = psutil.Process(int(ticks.read_text().splitlines()[-1].split()[1]))
    os.killpg(process.pid, signal.SIGKILL)  # the launcher's whole group, as a hard kill of dvc repro sends it
    killed = time.time()
    process.wait(timeout=10)
    deadline = time.monotonic() + 1.0
    while _running(kernel) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(kernel), "the kernel outlived its stage by more than a second"
    time.sleep(0.3)
    late = [float(line.split()[0]) - killed for line in ticks.read_text().splitlines() if float(line.split()[0]) > killed]
    # ipykernel's own watchdog polls once a second: it would let ~50 more ticks through on average
    assert all(delay < 0.05 for delay in late), f"the kernel wrote {len(late)} lines after the kill, the last {max(late):.3f} s after"


def test_a_finished_stage_leaves_no_kernel_sockets_and_no_transport_warning(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.txt"
    notebook = _ticking_notebook(tmp_path, ticks, count=3)
    before = _study_kernel_folders()
    process = _launch(notebook, tmp_path / "run.ipynb", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert len(ticks.read_text().splitlines()) == 3
    assert "without encryption" not in out + err, "the kernel still listens on TCP"
    assert not list(tmp_path.glob("kernel-ipc*")) and not list((REPO / "notebooks").glob("kernel-ipc*"))
    assert _study_kernel_folders() <= before, "the kernel's socket folder was left behind"


def test_the_launcher_prints_the_notebooks_lines_not_bare_reprs_of_displayed_objects() -> None:
    kept = []
    for text in ("[train lenet5-mnist] epoch 1/120 loss 0.31\n", "<IPython.core.display.Image object>\n",
                 "<pandas.io.formats.style.Styler at 0x7f3576791010>\n", "Executing Cell 3---------------\n", "\n",
                 "an <object> inside a sentence\n"):
        record = logging.LogRecord("papermill", logging.INFO, __file__, 1, text, None, None)
        if _CellOutput().filter(record):
            kept.append(record.getMessage())
    assert kept == ["[train lenet5-mnist] epoch 1/120 loss 0.31", "an <object> inside a sentence"]
