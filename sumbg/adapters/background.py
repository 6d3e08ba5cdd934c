"""sumbg processes that outlive the command that starts them: the only module that starts them.

An old worker may take minutes to finish its tasks after a switch; a rollback must not wait for
it, nor for the new worker to be ready. The operation hands that work to a hidden `sumbg`
command started here in its own session (a Ctrl-C, or the terminal of the operation closing,
does not reach it), with nothing on its stdin and its output appended to a log file. It records
how it ended in the site's history itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start_sumbg(root: Path, args: list[str], *, log: Path, pass_fds: tuple[int, ...] = ()) -> int:
    """Start `sumbg --root ROOT ARGS` detached; returns its pid. `pass_fds`: descriptors it inherits
    (a site lock it goes on holding, the end of a pipe it waits on)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "sumbg.cli", "--root", str(root), *args]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
            env={**os.environ, "SUMBG_BACKGROUND": "1"},
        )
    return process.pid


def await_parent_exit(fd: int) -> None:
    """Block until the process that started this one has exited: it held the other end of the
    pipe `fd` reads, which the kernel closes when it exits, however it exits."""
    while os.read(fd, 64):
        pass
    os.close(fd)


def parent_exit_pipe() -> tuple[int, int]:
    """(read end for the child, write end this process keeps open until it exits)."""
    read, write = os.pipe()
    return read, write
