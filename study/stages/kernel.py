"""The Jupyter kernel a stage's notebook runs in: it dies with its stage, and it talks over Unix sockets.

jupyter_client starts a kernel in a Unix session of its own (so that an interrupt reaches the kernel's whole
process group), which puts it out of reach of a signal sent to ``dvc repro``'s process group. A hard kill
(SIGKILL, the OOM killer, a closed terminal's SIGHUP turned SIGKILL) of the stage would leave the kernel
training and writing outputs after its stage had ended. ipykernel's own watchdog only polls for a new parent once a
second and needs the GIL to act. Linux can do better: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set in the child between
fork and exec, makes the kernel end the moment the process that started it does (see ``man 2 PR_SET_PDEATHSIG``).

IPC transport: the kernel's five ZeroMQ channels are Unix sockets next to the connection file instead of TCP
ports on localhost, so no other local user can connect to the kernel or read its traffic, and ipykernel no
longer warns that it "is running over TCP without encryption" at every stage. Each kernel's sockets live in a
private temporary folder (jupyter_client's default is relative to the working directory, the repository's
``notebooks/``, shared by concurrent stages), removed when the kernel is.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from jupyter_client.manager import AsyncKernelManager

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved before any fork (the child must not load libraries between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _end_with(parent: int, prctl: Callable[..., int]) -> None:
    """Ask Linux for SIGKILL when the parent thread ends; if ``parent`` already ended (it is no longer our parent),
    the request came too late to be delivered, so end now. Only a C call and ``os`` functions: safe after a fork."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child end (SIGKILL) when this process ends; None where Linux's prctl is missing.

    Between fork and exec only the pre-resolved C call and ``os`` functions run (no import, no lock).
    """
    if _PRCTL is None:
        return None
    parent, prctl = os.getpid(), _PRCTL
    return lambda: _end_with(parent, prctl)


def die_with_parent() -> None:
    """This process ends (SIGKILL) when its parent does: for a process torchrun starts in a session of its own."""
    if _PRCTL is not None:
        _end_with(os.getppid(), _PRCTL)


class StageKernelManager(AsyncKernelManager):
    """papermill's kernel manager with the two changes of this module (papermill passes it on to nbclient)."""

    def __init__(self, **kwargs: Any) -> None:
        # the system's temporary folder, not the repository's: a Unix socket's path may hold 107 bytes at most
        self.socket_folder = tempfile.mkdtemp(prefix="study-kernel-")
        super().__init__(transport="ipc", ip=os.path.join(self.socket_folder, "kernel"), **kwargs)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self.socket_folder, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources  # nbclient calls this one too, after a kernel that died by itself

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        hook = die_with_parent_hook()
        if hook is not None:
            kw["preexec_fn"] = hook
        await super()._async_launch_kernel(kernel_cmd, **kw)
