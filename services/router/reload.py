"""models.yaml, step three: picked up again while the router serves.

The router checks the file once a second (and at once on SIGHUP). A changed file is validated
and compiled in full before it replaces the routing table, in one assignment, so every call sees
either the old table or the new one. A file that does not validate is refused: the router keeps
serving the last good table and logs why, naming the line and field, until the file is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from tiller.router.config import ConfigError
from tiller.router.service import RouterService
from tiller.router.table import compile_file

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, path: Path, service: RouterService, interval_seconds: float) -> None:
        self.path, self.service, self.interval = path, service, interval_seconds
        self._seen = self._stamp()
        self._refused: tuple[float, int] | None = None  # the stamp of a file already refused
        self._now = asyncio.Event()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    async def run(self) -> None:
        """Watch the file until cancelled; SIGHUP asks for a reload now."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._now.set)
        try:
            while True:
                try:
                    await asyncio.wait_for(self._now.wait(), self.interval)
                    forced = True
                except TimeoutError:
                    forced = False
                self._now.clear()
                self.check(forced)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    def check(self, forced: bool = False) -> bool:
        """Reload if the file changed (or if forced); whether the table was replaced."""
        stamp = self._stamp()
        if not forced and (stamp == self._seen or stamp == self._refused):
            return False
        try:
            table = compile_file(self.path)
        except ConfigError as error:
            self._refused = stamp
            log.error(
                "models file refused; still serving the last good one",
                extra={"version": self.service.table.version, "error": str(error)},
            )
            return False
        self._seen, self._refused = stamp, None
        if table.version == self.service.table.version:
            return False  # touched, not changed
        self.service.table = table
        log.info(
            "routing table reloaded", extra={"models": len(table.models), "version": table.version}
        )
        return True
