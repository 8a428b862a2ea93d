"""JSON logs on stderr: one object per line with the service name, and the request id and trace
id of the request being served, when there is one. Never log payloads or keys.

An exception is logged as its traceback with each exception's type and none of its messages:
an engine's error may quote the prompt it was sent, a validation error the value it refused,
and whichever library logs them (the Temporal SDK logs a failing activity's error), their
words stay out of the log."""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from typing import Any

import orjson

from tiller.common import tracing

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The request this task serves (the gateway sets it when it names a request, the worker for
# each attempt): every log line about it carries its id.
REQUEST_ID: ContextVar[str | None] = ContextVar("tiller_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            entry["request_id"] = request_id
        if (ids := tracing.current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exc"] = withheld(record.exc_info[1])
        return orjson.dumps(entry, default=str).decode()


def withheld(error: BaseException | None) -> str:
    """The traceback of `error` and its causes, each exception named by its type only."""
    parts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        parts.append(
            "".join(traceback.format_tb(error.__traceback__)) + f"{name} (message withheld)"
        )
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return "\nwhile handling or caused by:\n".join(parts)


def configure(service: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Temporal's own worker logs are useful at warning; uvicorn's access log would log URLs.
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
