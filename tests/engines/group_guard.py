"""A server's process group that ends with the test run that started it, however the run ends
(SIGKILL included). Standard library only, Linux (PR_SET_PDEATHSIG).

`tiller up` and bench/chaos_stack.py ask the kernel to signal each child when its parent dies
(PR_SET_PDEATHSIG). That covers one process, not the processes it starts: vLLM's API server,
SIGKILLed, leaves its engine core running; SIGTERMed while it starts up, it goes on starting.
So the group's leader is this guard, a small process whose parent death signal is SIGTERM: it
then SIGTERMs the whole group and SIGKILLs whatever is left after a grace period.

    guard, process = group_guard.launch(argv, stdout=log, ...)  # Popen's keywords
    ...
    group_guard.stop(guard, process)  # the same ending, on purpose: returns once all are gone

The server runs in the guard's process group (its id is guard.pid), as the server's own
children do unless they leave it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
GRACE = 20.0  # seconds between the group's SIGTERM and its SIGKILL


def launch(
    argv: list[str], *, grace: float = GRACE, **popen: Any
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Start the guard, then `argv` in the guard's process group. From the thread that lives as
    long as the run (pytest's main thread): the kernel's signal follows the starting thread."""
    guard = subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), str(grace)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        process_group=0,  # a group of its own, whose id is its pid
        preexec_fn=_die_with_parent(),
    )
    try:
        process = subprocess.Popen(argv, process_group=guard.pid, **popen)
    except BaseException:
        stop(guard)
        raise
    return guard, process


def begin_stop(guard: subprocess.Popen[bytes]) -> None:
    """Have the guard end its group, without waiting (several groups then stop side by side)."""
    with contextlib.suppress(ProcessLookupError):
        guard.send_signal(signal.SIGTERM)


def stop(guard: subprocess.Popen[bytes], process: subprocess.Popen[bytes] | None = None) -> None:
    """End the group (SIGTERM, SIGKILL after the grace) and return once every member is gone."""
    begin_stop(guard)
    guard.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(guard.pid, signal.SIGKILL)  # only if the guard had died before its time
    while True:
        if process is not None:
            process.poll()  # reap it: a zombie still counts as a member of the group
        try:
            os.killpg(guard.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def kill(guard: subprocess.Popen[bytes], process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL the whole group at once (a server that dies, not one that stops)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(guard.pid, signal.SIGKILL)
    stop(guard, process)


def _die_with_parent() -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child

    def ask() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return ask


# --- the guard itself ---------------------------------------------------------------------------


def _others_in(group: int) -> bool:
    """Whether a live process other than this one is in the group (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
                state, _, pgrp = stat.read().rsplit(b")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == group and state != b"Z":
            return True
    return False


_ending = False


def _end_group(grace: float) -> None:
    global _ending
    if _ending:  # a second SIGTERM, come before the first's handler ignored the rest
        return
    _ending = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # our own killpg's, and any more
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _others_in(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)  # whatever is left, and the guard
    os._exit(0)  # pragma: no cover


def _guard(parent: int, grace: float) -> None:
    signal.signal(signal.SIGTERM, lambda *_: _end_group(grace))
    if os.getppid() != parent:  # the run died before the kernel was asked, or before the handler
        _end_group(grace)
    while True:
        signal.pause()


if __name__ == "__main__":
    _guard(int(sys.argv[1]), float(sys.argv[2]))
