"""A fast OpenAI-compatible engine stand-in for benchmarks (not a model).

    .venv/bin/python bench/engine.py --port P [--host 127.0.0.1] [--slow-token-ms 20]

It shares the CPU with the system under test, so it is a raw `asyncio.Protocol` HTTP/1.1 server
(keep-alive, pipelining) that builds answers from precomputed byte templates: a token costs a
few microseconds. Model `slow` waits `--slow-token-ms` before each token after the first; every
other model answers at once, in a single write. Token i is `f"w{i} "`, so a client can check
every answer exactly. Prints `READY <port>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import signal
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import orjson
import uvloop

DEFAULT_TOKENS = 16
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
CRLF = b"\r\n"

_STATUS = {200: b"200 OK", 400: b"400 Bad Request", 404: b"404 Not Found", 413: b"413 Too Large"}
_JSON_HEAD = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "bench"}
            for name in ("fast", "slow")
        ],
    }
)
# The tail of each SSE event after the per-request prefix `data: {"id":…,"choices":[`.
_ROLE = (
    b'{"index":0,"delta":{"role":"assistant","content":""},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)
_FINISH = (
    b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
)
_USAGE = b'],"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n'
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"  # the last event and the last HTTP chunk
_TOKEN = b'{"index":0,"delta":{"content":"w%d "},"logprobs":null,"finish_reason":null}]}\n\n'
_tokens: list[bytes] = []  # _TOKEN for i, grown on demand: formatting is done once per index
_ids = itertools.count()


class BadRequest(Exception):
    """The request cannot be answered; the message goes back as an OpenAI error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Chat:
    """One parsed chat completion request."""

    model: str
    tokens: int
    prompt_tokens: int
    stream: bool
    include_usage: bool


def token_event(i: int) -> bytes:
    while len(_tokens) <= i:
        _tokens.append(_TOKEN % len(_tokens))
    return _tokens[i]


def chunk(prefix: bytes, tail: bytes) -> bytes:
    """One SSE event `prefix + tail` framed as one HTTP chunk."""
    return b"%x\r\n%s%s\r\n" % (len(prefix) + len(tail), prefix, tail)


def json_response(status: int, body: bytes, keep_alive: bool = True) -> bytes:
    extra = b"" if keep_alive else b"connection: close\r\n"
    return _JSON_HEAD % (_STATUS[status], len(body), extra) + body


def error_body(message: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return orjson.dumps({"error": error})


def parse_chat(body: bytes) -> Chat:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    tokens = data.get("max_tokens", data.get("max_completion_tokens")) or DEFAULT_TOKENS
    if not isinstance(tokens, int) or tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    words = sum(
        len(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )
    options = data.get("stream_options") or {}
    stream = data.get("stream") is True
    return Chat(
        model=str(data.get("model") or "fast"),
        tokens=tokens,
        prompt_tokens=words,
        stream=stream,
        include_usage=stream and isinstance(options, dict) and bool(options.get("include_usage")),
    )


@lru_cache(maxsize=64)
def answer_text(tokens: int) -> str:
    return "".join(f"w{i} " for i in range(tokens))


def completion(chat: Chat) -> bytes:
    text = answer_text(chat.tokens)
    usage = {
        "prompt_tokens": chat.prompt_tokens,
        "total_tokens": chat.prompt_tokens + chat.tokens,
        "completion_tokens": chat.tokens,
    }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": "length",
    }
    return orjson.dumps(
        {
            "id": f"chatcmpl-bench{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [choice],
            "usage": usage,
        }
    )


def stream_prefix(model: str) -> bytes:
    """`data: {…,"choices":[`: everything in a chunk before its choice, the same for a stream."""
    head = b'data: {"id":"chatcmpl-bench%d","object":"chat.completion.chunk","created":%d,'
    return head % (next(_ids), int(time.time())) + b'"model":%s,"choices":[' % orjson.dumps(model)


def stream_end(prefix: bytes, chat: Chat) -> bytes:
    """The finish chunk, the usage chunk if asked for, `[DONE]` and the end of the body."""
    end = chunk(prefix, _FINISH)
    if chat.include_usage:
        total = chat.prompt_tokens + chat.tokens
        end += chunk(prefix, _USAGE % (chat.prompt_tokens, total, chat.tokens))
    return end + _DONE


def whole_stream(chat: Chat) -> bytes:
    prefix = stream_prefix(chat.model)
    parts = [_SSE_HEAD, chunk(prefix, _ROLE)]
    parts.extend(chunk(prefix, token_event(i)) for i in range(chat.tokens))
    parts.append(stream_end(prefix, chat))
    return b"".join(parts)


class Ticker:
    """Runs the stream steps due in the same millisecond from one timer.

    A thousand slow streams at 20 ms a token are 50,000 steps a second; each costs about 10 us,
    mostly the write. Measured on 1,000-stream bursts, a timer per step cost ~10% more CPU and a
    coroutine per stream sleeping between tokens ~30% more.
    """

    def __init__(self) -> None:
        self.slots: dict[int, list[SlowStream]] = {}

    def at(self, when: float, stream: SlowStream) -> None:
        slot = math.ceil(when * 1000)
        due = self.slots.get(slot)
        if due is None:
            due = self.slots[slot] = []
            asyncio.get_running_loop().call_at(slot / 1000, self.run, slot)
        due.append(stream)

    def run(self, slot: int) -> None:
        for stream in self.slots.pop(slot):
            stream.step()


class SlowStream:
    """A stream that sends token k at (about) start + k * delay, stepped by the ticker."""

    def __init__(self, connection: EngineProtocol, chat: Chat, delay: float) -> None:
        self.connection, self.chat, self.delay = connection, chat, delay
        self.prefix = stream_prefix(chat.model)
        self.start = asyncio.get_running_loop().time()
        self.sent = 1
        self.stopped = False
        first = chunk(self.prefix, token_event(0))
        connection.write(_SSE_HEAD + chunk(self.prefix, _ROLE) + first)
        connection.ticker.at(self.start + delay, self)

    def step(self) -> None:
        if self.stopped:
            return
        self.connection.write(chunk(self.prefix, token_event(self.sent)))
        self.sent += 1
        if self.sent < self.chat.tokens:
            self.connection.ticker.at(self.start + self.sent * self.delay, self)
            return
        self.connection.write(stream_end(self.prefix, self.chat))
        self.connection.answered()

    def cancel(self) -> None:
        self.stopped = True


class SlowCompletion:
    """A non-stream answer sent when the last token would have been generated."""

    def __init__(self, connection: EngineProtocol, chat: Chat, delay: float) -> None:
        self.connection, self.chat = connection, chat
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later((chat.tokens - 1) * delay, self._send)

    def _send(self) -> None:
        self.connection.write(json_response(200, completion(self.chat), self.connection.keep_alive))
        self.connection.answered()

    def cancel(self) -> None:
        self.timer.cancel()


class EngineProtocol(asyncio.Protocol):
    """One client connection: parses requests from a buffer and answers them in order."""

    def __init__(self, slow_delay: float, ticker: Ticker) -> None:
        self.slow_delay, self.ticker = slow_delay, ticker
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy: SlowStream | SlowCompletion | None = None  # pipelined requests wait for it
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy is not None:
            self.busy.cancel()  # the client went away: stop generating for it
            self.busy = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.answer_buffered()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def answered(self) -> None:
        """The slow answer in progress is complete: go on with pipelined requests."""
        self.busy = None
        if not self.keep_alive:
            self.close()
        elif self.buffer:
            self.answer_buffered()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def answer_buffered(self) -> None:
        while self.busy is None and self.transport is not None and self.keep_alive:
            request = self.take_request()
            if request is None:
                return
            self.answer(*request)

    def take_request(self) -> tuple[bytes, bytes, bytes] | None:
        """(method, path, body) of the first complete request in the buffer, removed from it."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.reject(413, "request head too large")
            return None
        lines = bytes(self.buffer[:end]).split(CRLF)
        try:
            method, path, version = lines[0].split(b" ", 2)
        except ValueError:
            self.reject(400, "malformed request line")
            return None
        length, keep_alive = 0, version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value) if value.strip().isdigit() else -1
            elif name == b"connection":
                keep_alive = value.strip().lower() != b"close"
            elif name == b"transfer-encoding":
                length = -1  # chunked request bodies: not needed by any client we test
        if not 0 <= length <= MAX_BODY:
            self.reject(400, "need a valid content-length")
            return None
        start = end + 4
        if len(self.buffer) < start + length:
            return None
        body = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        self.keep_alive = keep_alive
        return method, path.partition(b"?")[0], body

    def reject(self, status: int, message: str) -> None:
        self.keep_alive = False
        self.write(json_response(status, error_body(message), keep_alive=False))
        self.close()

    def answer(self, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"POST" and path == b"/v1/chat/completions":
            self.chat(body)
        elif method == b"GET" and path == b"/health":
            self.write(json_response(200, b"", self.keep_alive))
        elif method == b"GET" and path == b"/v1/models":
            self.write(json_response(200, _MODELS, self.keep_alive))
        else:
            route = f"{method.decode(errors='replace')} {path.decode(errors='replace')}"
            message = f"no route for {route}"
            self.write(json_response(404, error_body(message), self.keep_alive))
        if not self.keep_alive and self.busy is None:
            self.close()

    def chat(self, body: bytes) -> None:
        try:
            chat = parse_chat(body)
        except BadRequest as e:
            self.write(json_response(e.status, error_body(str(e)), self.keep_alive))
            return
        slow = chat.model == "slow" and chat.tokens > 1 and self.slow_delay > 0
        if slow:
            kind = SlowStream if chat.stream else SlowCompletion
            self.busy = kind(self, chat, self.slow_delay)
        elif chat.stream:
            self.write(whole_stream(chat))
        else:
            self.write(json_response(200, completion(chat), self.keep_alive))


async def serve(host: str, port: int, slow_token_ms: float = 20.0) -> asyncio.Server:
    """Listen on host:port (0 picks a free port); the caller closes the returned server."""
    loop = asyncio.get_running_loop()
    delay, ticker = slow_token_ms / 1000, Ticker()
    return await loop.create_server(lambda: EngineProtocol(delay, ticker), host, port, backlog=4096)


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def main(args: argparse.Namespace) -> None:
    server = await serve(args.host, args.port, args.slow_token_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {bound_port(server)}", flush=True)
    await stop.wait()
    server.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-token-ms", type=float, default=20.0)
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
