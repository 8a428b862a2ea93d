"""Process lifecycle shared by every service: run until SIGTERM/SIGINT, exit with one clear line."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from tiller.common import logs, tracing
from tiller.common.settings import SettingsError


class _HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=_HasLogLevel)


class StartupError(RuntimeError):
    """A service cannot start (port taken, bad configuration); the message is for humans."""


T = TypeVar("T")


def service_task(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task that serves the whole process (a batcher, a reader of many streams, a poller),
    though a request happened to start it: it runs in a context of its own, so its logs and
    spans carry no request's id or trace."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so servers can stop gracefully."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def run_service(
    name: str, load_settings: Callable[[], S], serve: Callable[[S], Awaitable[None]]
) -> None:
    """Read settings, then run the service on uvloop; start-up errors print one line, exit 1."""
    try:
        settings = load_settings()
        logs.configure(name, settings.log_level)
        tracing.configure(name)
        try:
            _run(serve(settings))
        finally:
            tracing.shutdown()
    except (StartupError, SettingsError) as error:
        print(f"tiller {name}: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def _run(main: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)  # type: ignore[arg-type]
        return
    uvloop.run(main)  # type: ignore[arg-type]
