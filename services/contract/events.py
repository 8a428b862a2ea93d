"""The events of one answer, as the worker writes them and the gateway reads them: a tagged union,
encoded to one JSON object per Redis stream entry and decoded once, where it is read.

An answer is any number of `Delta`s, then exactly one terminal event: `Done` (the result and its
usage) or `Failed` (the error, and what a pipeline's earlier steps spent). A `Claim` is written by
an attempt that takes the stream over from an earlier one (answer_stream.py); it carries no
answer. Each event read from the stream has its entry's id (`id`), which is also its SSE id.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from tiller.common.errors import TillerError
from tiller.common.redis_text import text
from tiller.contract.results import InferenceResult, Usage

# An engine chunk's choices as the engine wrote them (pass-through parameters).
Choices = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text: `tokens` engine deltas (about one token each), merged."""

    text: str
    tokens: int = 1
    # With pass-through parameters: the engine's chunks' choices, one list per chunk (tool-call
    # deltas, logprobs, several choices); `text` is then choice 0's content.
    chunks: tuple[Choices, ...] = ()
    id: str = ""
    terminal: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Done:
    result: InferenceResult
    id: str = ""
    terminal: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Failed:
    error: TillerError
    # What a pipeline's earlier steps spent: charged even though the answer failed.
    spent: Usage = field(default_factory=Usage)
    id: str = ""
    terminal: ClassVar[bool] = True

    def exception(self) -> TillerError:
        """The error to raise: a fresh one, as an event may be shared by several readers."""
        return TillerError.from_dict(self.error.to_dict())


@dataclass(frozen=True, slots=True)
class Claim:
    """A later attempt took the stream over (answer_stream.py)."""

    id: str = ""
    terminal: ClassVar[bool] = False


Event = Delta | Done | Failed | Claim

# The wire names of the kinds (the entry's `kind`), kept from before events were typed.
_DELTA, _DONE, _ERROR, _CLAIM = "delta", "done", "error", "claim"


def encode(event: Event) -> bytes:
    match event:
        case Delta(text=text_, tokens=tokens, chunks=chunks):
            body: dict[str, Any] = {"kind": _DELTA, "text": text_, "n": tokens}
            if chunks:
                body["c"] = chunks
            return orjson.dumps(body)
        case Done(result=result):
            return orjson.dumps({"kind": _DONE, "result": dataclasses.asdict(result)})
        case Failed(error=error, spent=spent):
            published = error.to_dict()
            if spent.total_tokens:
                published["spent"] = dataclasses.asdict(spent)
            return orjson.dumps({"kind": _ERROR, "error": published})
        case Claim():
            return orjson.dumps({"kind": _CLAIM})


def decode(entry_id: bytes | str, body: bytes | str) -> Event:
    """One stream entry's event; ValueError (or KeyError) if it is not one."""
    data = orjson.loads(body)
    id_ = text(entry_id)
    kind = data.get("kind")
    if kind == _DELTA:
        return Delta(data["text"], int(data.get("n", 1)), tuple(data.get("c") or ()), id_)
    if kind == _DONE:
        return Done(InferenceResult.from_dict(data["result"]), id_)
    if kind == _ERROR:
        error = data["error"]
        spent = error.get("spent")
        return Failed(TillerError.from_dict(error), Usage.from_dict(spent or {}), id_)
    if kind == _CLAIM:
        return Claim(id_)
    raise ValueError(f"unknown event kind {kind!r}")


def with_id(event: Event, id_: str) -> Event:
    return dataclasses.replace(event, id=id_)


def stream_key(prefix: str, request_id: str) -> str:
    """The Redis stream that carries one request's answer."""
    return f"{prefix}events:{request_id}"


def cancel_channel(prefix: str) -> str:
    """Where the gateway publishes the id of a request whose client left (worker/cancels.py)."""
    return f"{prefix}cancel"


@dataclass(frozen=True)
class Publication:
    """The `tiller.pipeline.publish` activity's input: the end of an answer that a pipeline's
    workflow wrote itself (a text of its own, or a step's error), for the client's stream."""

    events_key: str
    end: Done | Failed

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.end, Done):
            return {"events_key": self.events_key, "result": dataclasses.asdict(self.end.result)}
        error = self.end.error.to_dict()
        if self.end.spent.total_tokens:
            error["spent"] = dataclasses.asdict(self.end.spent)
        return {"events_key": self.events_key, "error": error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Publication:
        if "error" in data:
            error = data["error"]
            end: Done | Failed = Failed(
                TillerError.from_dict(error), Usage.from_dict(error.get("spent") or {})
            )
        else:
            end = Done(InferenceResult.from_dict(data["result"]))
        return cls(data["events_key"], end)
