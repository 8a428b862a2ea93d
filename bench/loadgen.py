"""A load generator for OpenAI-compatible chat completions that verifies every response.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:PORT/v1 [--stream] [--tokens 16]
        [--concurrency 16] [--seconds 5] [--burst N] [--key K] [--model M] [--timeout 120]

It expects the answers of bench/engine.py (token i is `f"w{i} "`), so a response is only counted
when its text, token counts and framing are exactly right: a gateway that drops, duplicates or
reorders a chunk shows up as errors, not as throughput. It shares the CPU with the system under
test, hence a raw asyncio HTTP/1.1 client, one precomputed request and orjson.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

DEFAULT_TIMEOUT_S = 120.0
MAX_REASONS = 5


class BadResponse(Exception):
    """A response that failed verification; the message is the short reason reported."""


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    tokens: int
    model: str = "fast"


@dataclass
class Report:
    """Figures over the verified responses; failed ones only count as errors."""

    scenario: str
    requests: int  # responses verified plus errors
    errors: int
    error_reasons: list[tuple[str, int]]  # the most frequent, at most MAX_REASONS
    elapsed_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    requests_per_s: float  # verified responses per second
    tokens_per_s: float  # completion tokens of verified responses per second
    mean_content_chunks: float | None  # per verified stream; None when not streaming
    in_flight_at_all_started: int | None = None  # run_burst: streams still open at that moment

    def summary(self) -> str:
        lines = [
            f"{self.scenario}: {self.requests} requests, {self.errors} errors"
            f" in {self.elapsed_s:.2f} s | {self.requests_per_s:.1f} req/s,"
            f" {self.tokens_per_s:.0f} tokens/s",
            f"  latency p50 {self.latency_p50_ms:.2f} ms, p99 {self.latency_p99_ms:.2f} ms |"
            f" TTFT p50 {self.ttft_p50_ms:.2f} ms, p99 {self.ttft_p99_ms:.2f} ms",
        ]
        if self.mean_content_chunks is not None:
            lines.append(f"  content chunks per stream: {self.mean_content_chunks:.1f}")
        if self.in_flight_at_all_started is not None:
            lines.append(f"  streams open when all had started: {self.in_flight_at_all_started}")
        lines.extend(f"  error x{count}: {reason}" for reason, count in self.error_reasons)
        return "\n".join(lines)


@lru_cache(maxsize=64)
def expected_text(tokens: int) -> str:
    return "".join(f"w{i} " for i in range(tokens))


def verify_completion(body: bytes, tokens: int) -> None:
    """Check a non-stream `chat.completion` body; raise BadResponse on the first problem."""
    try:
        data = orjson.loads(body)
        content = data["choices"][0]["message"]["content"]
        usage = data["usage"]
        completion_tokens, prompt_tokens = usage["completion_tokens"], usage["prompt_tokens"]
    except (orjson.JSONDecodeError, LookupError, TypeError) as e:
        raise BadResponse(f"malformed completion ({type(e).__name__})") from None
    if content != expected_text(tokens):
        raise BadResponse("content differs from the expected text")
    if completion_tokens != tokens:
        raise BadResponse(f"usage.completion_tokens {completion_tokens} != {tokens}")
    if not (isinstance(prompt_tokens, int) and prompt_tokens > 0):
        raise BadResponse(f"usage.prompt_tokens {prompt_tokens!r} is not positive")


class StreamVerifier:
    """Checks an SSE chat completion stream fed in pieces of any size.

    It never raises while fed, so the caller always reads the body to its end and can keep the
    connection; `finish` raises BadResponse with the first problem seen. The events of one piece
    are parsed by one orjson call, as a JSON array, to keep the cost per token small.
    """

    def __init__(self, tokens: int, on_first_content: Callable[[], None] | None = None) -> None:
        self.tokens = tokens
        self.on_first_content = on_first_content
        self.first_content_at: float | None = None  # time.perf_counter()
        self.content: list[str] = []
        self.usage_tokens: list[Any] = []
        self.finished = False
        self.done = False
        self.problem: str | None = None
        self.pending = b""

    def feed(self, data: bytes) -> None:
        data = self.pending + data
        if b"\r" in data:  # CRLF line endings (sse-starlette's default); a lone \r may wait
            data = data.replace(b"\r\n", b"\n")
        *events, self.pending = data.split(b"\n\n")
        payloads = []
        for block in events:
            if block.startswith(b"data: ") and b"\n" not in block:
                payloads.append(block[6:])  # the usual shape: one data line and nothing else
            elif (payload := event_data(block)) is not None:
                payloads.append(payload)  # else only comments (`: ping`), `id:`, `event:`...
        if payloads:
            self.payloads(payloads)

    def payloads(self, payloads: list[bytes]) -> None:
        if self.done:
            self.fail("event after [DONE]")
        if b"[DONE]" in payloads:
            if payloads.index(b"[DONE]") != len(payloads) - 1:
                self.fail("event after [DONE]")
            self.done = True
            payloads = [p for p in payloads if p != b"[DONE]"]
        chunks, all_json = parse_all(payloads)
        if not all_json:
            self.fail("data line is not JSON")
        self.chunks(chunks)
        if self.first_content_at is None and self.content:
            self.first_content_at = time.perf_counter()
            if self.on_first_content is not None:
                self.on_first_content()

    def chunks(self, chunks: list[Any]) -> None:
        try:
            for data in chunks:
                if "error" in data:
                    self.fail(f"stream error: {str(data['error'])[:80]}")
                if choices := data.get("choices"):
                    choice = choices[0]
                    if choice.get("finish_reason"):
                        self.finished = True
                    if (delta := choice.get("delta")) and (text := delta.get("content")):
                        self.content.append(text)
                if (usage := data.get("usage")) is not None:
                    self.usage_tokens.append(usage.get("completion_tokens"))
        except (AttributeError, TypeError, LookupError):
            self.fail("chunk is not a chat.completion.chunk")

    def fail(self, reason: str) -> None:
        if self.problem is None:
            self.problem = reason

    def finish(self) -> int:
        """The number of content chunks of a correct stream; raises BadResponse otherwise."""
        if self.pending.strip():
            self.fail("the body ends inside an event")  # by the SSE spec, it is dropped
        if not self.done:
            self.fail("no [DONE] at the end")
        if self.problem is not None:
            raise BadResponse(self.problem)
        if "".join(self.content) != expected_text(self.tokens):
            raise BadResponse("streamed content differs from the expected text")
        if self.usage_tokens != [self.tokens]:
            raise BadResponse(f"usage completion_tokens per chunk {self.usage_tokens[:3]}")
        if not self.finished:
            raise BadResponse("no finish_reason")
        return len(self.content)


def parse_all(payloads: list[bytes]) -> tuple[list[Any], bool]:
    """The JSON values of payloads, and whether every one was JSON."""
    with contextlib.suppress(orjson.JSONDecodeError):
        values = orjson.loads(b"[%s]" % b",".join(payloads))
        if len(values) == len(payloads):  # else one like `1,2` read as two values
            return values, True
    values = []
    for payload in payloads:
        with contextlib.suppress(orjson.JSONDecodeError):
            values.append(orjson.loads(payload))
    return values, len(values) == len(payloads)


def event_data(block: bytes) -> bytes | None:
    """The data of one SSE event by the spec (fields, comments, `data:` lines joined)."""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None


@dataclass(frozen=True)
class Target:
    """Where to send, and the one request every virtual user sends."""

    host: str
    port: int
    request: bytes
    stream: bool
    tokens: int
    timeout: float


def make_target(
    base_url: str,
    scenario: Scenario,
    api_key: str | None,
    model: str | None,
    timeout: float,
) -> Target:
    url = urlsplit(base_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"need an http:// URL, got {base_url!r}")
    port = url.port or 80
    body: dict[str, Any] = {
        "model": model or scenario.model,
        "messages": [{"role": "user", "content": "hello bench"}],
        "max_tokens": scenario.tokens,
        "stream": scenario.stream,
    }
    if scenario.stream:
        body["stream_options"] = {"include_usage": True}
    payload = orjson.dumps(body)
    accept = b"text/event-stream" if scenario.stream else b"application/json"
    head = [
        b"POST %s/chat/completions HTTP/1.1" % url.path.rstrip("/").encode(),
        b"host: %s:%d" % (url.hostname.encode(), port),
        b"content-type: application/json",
        b"accept: " + accept,
        b"content-length: %d" % len(payload),
    ]
    if api_key:
        head.append(b"authorization: Bearer " + api_key.encode())
    request = b"\r\n".join(head) + b"\r\n\r\n" + payload
    return Target(url.hostname, port, request, scenario.stream, scenario.tokens, timeout)


class Connection:
    """One keep-alive HTTP/1.1 connection, opened on first use and reopened after a close."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.keep = False  # whether the last response left the connection usable

    async def open(self) -> None:
        if self.writer is None:
            host, port = self.target.host, self.target.port
            self.reader, self.writer = await asyncio.open_connection(host, port)
            self.keep = True

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self) -> tuple[int, int | None, bool]:
        """Send the request; (status, content-length, chunked) of the response head."""
        reused = self.writer is not None
        if reused and not (self.keep and self.reader is not None and not self.reader.at_eof()):
            await self.close()
            reused = False
        await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.target.request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as e:
            if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise
            await self.close()  # the server had closed the idle connection: one new try
            return await self.send()
        status, length, chunked, self.keep = parse_head(head)
        return status, length, chunked

    async def read_body(
        self, length: int | None, chunked: bool, sink: Callable[[bytes], None]
    ) -> None:
        assert self.reader is not None
        if chunked:
            await self.read_chunked(sink)
        elif length is not None:
            sink(await self.reader.readexactly(length))
        else:
            sink(await self.reader.read())
            self.keep = False

    async def read_chunked(self, sink: Callable[[bytes], None]) -> None:
        assert self.reader is not None
        decoder = Dechunker()
        while not decoder.done:
            data = await self.reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            if payload := decoder.feed(data):
                sink(payload)
        if decoder.buffer:
            raise ValueError("bytes after the end of a chunked body")  # we never pipeline


class Dechunker:
    """An incremental decoder of a chunked HTTP/1.1 body: wire bytes in, payload bytes out.

    Whatever the socket has is decoded at once, so a read holding many small chunks costs one
    await and one step of the loop per chunk. A chunk is passed on once it is whole (ours are
    small). Trailers are not expected.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf, out, pos = self.buffer + data, [], 0
        while (eol := buf.find(b"\r\n", pos)) >= 0:
            start, size = eol + 2, int(buf[pos:eol].partition(b";")[0], 16)
            if size < 0:
                raise ValueError("negative chunk size")
            end = start + size
            if len(buf) < end + 2:
                break
            if buf[end : end + 2] != b"\r\n":
                raise ValueError("no CRLF after a chunk")
            pos = end + 2
            if end == start:  # the last chunk, "0\r\n\r\n"
                self.done = True
                break
            out.append(buf[start:end])
        self.buffer = buf[pos:]
        return b"".join(out)


def parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content-length, chunked, keep-alive) of a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"malformed status line {lines[0][:40]!r}")
    length, chunked, keep = None, False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
    return int(parts[1]), length, chunked, keep


@dataclass
class Result:
    latency: float
    ttft: float
    chunks: int


async def one_request(
    conn: Connection, on_first_content: Callable[[], None] | None = None
) -> Result:
    """Send one request on conn and verify its response; raises BadResponse on any failure."""
    target = conn.target
    try:
        async with asyncio.timeout(target.timeout):
            start = time.perf_counter()
            return await exchange_verified(conn, start, on_first_content)
    except BadResponse:
        raise
    except TimeoutError:
        await conn.close()
        raise BadResponse(f"timeout after {target.timeout:g} s") from None
    except asyncio.IncompleteReadError:
        await conn.close()
        raise BadResponse("connection closed mid-response") from None
    except (OSError, ValueError, asyncio.LimitOverrunError) as e:
        await conn.close()
        raise BadResponse(f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None


async def exchange_verified(
    conn: Connection, start: float, on_first_content: Callable[[], None] | None
) -> Result:
    target = conn.target
    status, length, chunked = await conn.send()
    body: list[bytes] = []
    if status != 200:
        await conn.read_body(length, chunked, body.append)
        raise BadResponse(f"HTTP {status}: {error_message(b''.join(body))}")
    if target.stream:
        verifier = StreamVerifier(target.tokens, on_first_content)
        await conn.read_body(length, chunked, verifier.feed)
        end = time.perf_counter()
        chunks = verifier.finish()
        return Result(end - start, (verifier.first_content_at or end) - start, chunks)
    await conn.read_body(length, chunked, body.append)
    end = time.perf_counter()
    if on_first_content is not None:
        on_first_content()
    verify_completion(b"".join(body), target.tokens)
    return Result(end - start, end - start, 1)


def error_message(body: bytes) -> str:
    with contextlib.suppress(orjson.JSONDecodeError, LookupError, TypeError):
        return str(orjson.loads(body)["error"]["message"])[:100]
    return body[:100].decode(errors="replace")


@dataclass
class Tally:
    """Results as they come; turned into a Report at the end."""

    tokens: int
    stream: bool
    results: list[Result] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def report(self, scenario: str, elapsed: float, in_flight: int | None = None) -> Report:
        latencies = [r.latency * 1000 for r in self.results]
        ttfts = [r.ttft * 1000 for r in self.results]
        ok = len(self.results)
        rate = ok / elapsed if elapsed > 0 else 0.0
        chunks = statistics.fmean(r.chunks for r in self.results) if ok else float("nan")
        return Report(
            scenario=scenario,
            requests=ok + self.errors.total(),
            errors=self.errors.total(),
            error_reasons=self.errors.most_common(MAX_REASONS),
            elapsed_s=elapsed,
            latency_p50_ms=percentile(latencies, 50),
            latency_p99_ms=percentile(latencies, 99),
            ttft_p50_ms=percentile(ttfts, 50),
            ttft_p99_ms=percentile(ttfts, 99),
            requests_per_s=rate,
            tokens_per_s=rate * self.tokens,
            mean_content_chunks=chunks if self.stream else None,
            in_flight_at_all_started=in_flight,
        )


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def run_closed_loop(
    base_url: str,
    scenario: Scenario,
    concurrency: int,
    seconds: float,
    *,
    api_key: str | None = None,
    model: str | None = None,
    warmup_seconds: float = 1.0,
    request_timeout: float = DEFAULT_TIMEOUT_S,
) -> Report:
    """`concurrency` users, each on its own keep-alive connection, sending back to back.

    Requests that start during the warm-up are discarded; those started in the measured window
    all count, including the ones still in flight when it closes (elapsed runs until they end).
    """
    target = make_target(base_url, scenario, api_key, model, request_timeout)
    tally = Tally(scenario.tokens, scenario.stream)
    measure_from = time.perf_counter() + warmup_seconds
    stop_at = measure_from + seconds

    async def user() -> None:
        conn = Connection(target)
        try:
            while (started := time.perf_counter()) < stop_at:
                try:
                    result = await one_request(conn)
                except BadResponse as e:
                    if started >= measure_from:
                        tally.errors[str(e)] += 1
                    continue
                if started >= measure_from:
                    tally.results.append(result)
        finally:
            await conn.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return tally.report(scenario.name, time.perf_counter() - measure_from)


async def run_burst(
    base_url: str,
    scenario: Scenario,
    streams: int,
    *,
    api_key: str | None = None,
    model: str | None = None,
    on_all_started: Callable[[], Awaitable[None]] | None = None,
    connect_concurrency: int = 200,
    request_timeout: float = DEFAULT_TIMEOUT_S,
) -> Report:
    """`streams` requests at once, each on its own connection.

    When every one has received its first content token (or failed), `on_all_started` is
    awaited while the streams go on; then they all finish. Connects are limited to
    `connect_concurrency` at a time so that the server's listen backlog is not overrun.
    """
    target = make_target(base_url, scenario, api_key, model, request_timeout)
    tally = Tally(scenario.tokens, scenario.stream)
    connecting = asyncio.Semaphore(connect_concurrency)
    all_started = asyncio.Event()
    pending = set(range(streams))  # streams without a first token (or a failure) yet
    finished = 0

    def started(i: int) -> None:
        pending.discard(i)
        if not pending:
            all_started.set()

    async def stream(i: int) -> None:
        nonlocal finished
        conn = Connection(target)
        try:
            async with connecting, asyncio.timeout(request_timeout):
                await conn.open()
            tally.results.append(await one_request(conn, lambda: started(i)))
        except BadResponse as e:
            tally.errors[str(e)] += 1
        except (OSError, TimeoutError) as e:
            tally.errors[f"connect: {type(e).__name__}"] += 1
        finally:
            finished += 1
            started(i)
            await conn.close()

    begin = time.perf_counter()
    tasks = [asyncio.create_task(stream(i)) for i in range(streams)]
    try:
        await all_started.wait()
        in_flight = streams - finished
        if on_all_started is not None:
            await on_all_started()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tally.report(scenario.name, time.perf_counter() - begin, in_flight)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--burst", type=int, default=0, help="N streams at once instead")
    parser.add_argument("--key")
    parser.add_argument("--model", default="fast")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    kind = "stream" if args.stream else "plain"
    if args.burst:
        name = f"burst of {args.burst}, {kind} {args.model} {args.tokens} tokens"
        scenario = Scenario(name, args.stream, args.tokens, args.model)
        report = await run_burst(
            args.url, scenario, args.burst, api_key=args.key, request_timeout=args.timeout
        )
    else:
        name = f"{kind} {args.model} {args.tokens} tokens c={args.concurrency}"
        scenario = Scenario(name, args.stream, args.tokens, args.model)
        report = await run_closed_loop(
            args.url,
            scenario,
            args.concurrency,
            args.seconds,
            api_key=args.key,
            warmup_seconds=args.warmup,
            request_timeout=args.timeout,
        )
    print(report.summary(), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(parse_args()))
