"""models.yaml, step three: picked up again while the router serves.

The router reads the file once a second (and at once on SIGHUP). A changed file is validated
and compiled in full before it replaces the routing table, in one assignment, so every call sees
either the old table or the new one. A file that does not validate is refused: the router keeps
serving the last good table and logs why, naming the line and field, until the file is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from pathlib import Path

from tiller.router import config, metrics
from tiller.router.config import ConfigError
from tiller.router.service import RouterService
from tiller.router.table import compile_source

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, path: Path, service: RouterService, interval_seconds: float) -> None:
        self.path, self.service, self.interval = path, service, interval_seconds
        self._refused: bytes | None = None  # the digest of a file already refused
        self._now = asyncio.Event()

    async def run(self) -> None:
        """Watch the file until cancelled; SIGHUP asks for a reload now."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._now.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # a timeout is the usual tick
                    await asyncio.wait_for(self._now.wait(), self.interval)
                self._now.clear()
                try:
                    self.check()
                except Exception:  # whatever happens, keep watching and keep serving
                    log.exception("checking the models file failed")
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    def check(self) -> bool:
        """Reload if the file's content changed; whether the table was replaced.

        The content is compared, not the file's time or size: the file is small, and a copy
        that keeps its timestamp (cp -p, rsync -t, kubectl cp) must not go unnoticed."""
        try:
            source = config.read(self.path)
        except ConfigError as error:
            return self._refuse(None, error)
        digest = hashlib.sha256(source).digest()
        if digest == self._refused:
            return False  # refused already; said so once
        try:
            table = compile_source(source, self.path)
        except ConfigError as error:
            return self._refuse(digest, error)
        self._refused = None
        if table.version == self.service.table.version:
            return False  # unchanged
        self.service.table = table
        metrics.RELOADS.labels("applied").inc()
        metrics.serving(table)
        log.info(
            "routing table reloaded", extra={"models": len(table.models), "version": table.version}
        )
        return True

    def _refuse(self, digest: bytes | None, error: ConfigError) -> bool:
        if digest is None or digest != self._refused:
            metrics.RELOADS.labels("refused").inc()
            log.error(
                "models file refused; still serving the last good one",
                extra={"version": self.service.table.version, "error": str(error)},
            )
        self._refused = digest
        return False
