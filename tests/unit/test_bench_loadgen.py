"""The benchmark engine stand-in and the verifying load generator, against each other.

Everything runs in-process on loopback (127.0.0.1, free ports); the whole file takes a few
seconds. Broken answers come from a tiny scripted server, so the verifier is shown to reject them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

import bench.engine as engine
from bench import loadgen
from bench.loadgen import BadResponse, Scenario, StreamVerifier


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = await engine.serve("127.0.0.1", 0, slow_token_ms=5)
    yield f"http://127.0.0.1:{engine.bound_port(server)}/v1"
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("stream", [False, True])
async def test_closed_loop_verifies_every_answer(base_url: str, stream: bool) -> None:
    scenario = Scenario("t", stream=stream, tokens=24)
    report = await loadgen.run_closed_loop(
        base_url, scenario, concurrency=4, seconds=0.4, warmup_seconds=0.1
    )
    assert report.errors == 0, report.error_reasons
    assert report.requests > 20
    assert report.tokens_per_s == pytest.approx(report.requests_per_s * 24)
    assert report.tokens_per_s > 0
    assert 0 < report.ttft_p50_ms <= report.latency_p99_ms
    assert report.mean_content_chunks == (24 if stream else None)


async def test_burst_of_slow_streams_calls_the_hook_once_all_have_content(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifiers: list[StreamVerifier] = []

    class Recorded(StreamVerifier):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            verifiers.append(self)

    monkeypatch.setattr(loadgen, "StreamVerifier", Recorded)
    seen_at_hook: list[int] = []

    async def all_started() -> None:
        seen_at_hook.append(sum(v.first_content_at is not None for v in verifiers))

    scenario = Scenario("burst", stream=True, tokens=40, model="slow")
    report = await loadgen.run_burst(
        base_url, scenario, 50, on_all_started=all_started, connect_concurrency=7
    )
    assert report.errors == 0, report.error_reasons
    assert report.requests == 50 and seen_at_hook == [50]
    assert report.in_flight_at_all_started == 50
    assert report.latency_p50_ms >= 39 * 5  # the slow model waits 5 ms before tokens 2..40
    assert report.ttft_p99_ms < report.latency_p50_ms


async def test_slow_non_stream_answer_takes_the_time_of_its_tokens(base_url: str) -> None:
    scenario = Scenario("slow", stream=False, tokens=11, model="slow")
    report = await loadgen.run_burst(base_url, scenario, 3)
    assert report.errors == 0, report.error_reasons
    assert report.latency_p50_ms >= 10 * 5


async def test_token_count_mismatch_is_an_error(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = loadgen.make_target

    def expect_one_more(*args: Any) -> loadgen.Target:
        target = original(*args)
        return loadgen.Target(**{**target.__dict__, "tokens": target.tokens + 1})

    monkeypatch.setattr(loadgen, "make_target", expect_one_more)
    for stream in (False, True):
        scenario = Scenario("t", stream=stream, tokens=8)
        report = await loadgen.run_closed_loop(
            base_url, scenario, concurrency=2, seconds=0.1, warmup_seconds=0
        )
        assert report.errors == report.requests > 0
        assert "expected text" in report.error_reasons[0][0]


async def test_http_errors_are_reported_with_their_message(base_url: str) -> None:
    scenario = Scenario("t", stream=True, tokens=4)
    report = await loadgen.run_burst(base_url.removesuffix("/v1"), scenario, 3)
    assert report.errors == 3
    assert report.error_reasons == [("HTTP 404: no route for POST /chat/completions", 3)]
    scenario = Scenario("t", stream=False, tokens=4)
    report = await loadgen.run_burst(base_url + "/x", scenario, 2)
    assert report.error_reasons == [("HTTP 404: no route for POST /v1/x/chat/completions", 2)]


# A scripted server: answers every request with `respond(n)` for the n-th request.


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Callable[[int], bytes | None], bool], Any]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(respond: Callable[[int], bytes | None], close_after: bool) -> str:
        count = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            writers.append(writer)
            try:
                while not reader.at_eof():
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    count += 1
                    answer = respond(count)
                    if answer is None:
                        await reader.read()  # never answers; waits for the client to leave
                        break
                    writer.write(answer)
                    if close_after:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.sleep(0.01)


def events(tokens: int, *, usage: int = 1, done: bool = True) -> list[bytes]:
    """A correct stream's SSE events (in the gateway's CRLF style, with `id:` and a comment)."""
    out = [b": ping"]
    for i in range(tokens):
        chunk = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
        out.append(b"id: %d\r\ndata: %s" % (i, orjson.dumps(chunk)))
    out.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}')
    out += [b'data: {"choices":[],"usage":{"completion_tokens":%d}}' % tokens] * usage
    if done:
        out.append(b"data: [DONE]")
    return out


def chunked_response(events: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n\r\n\r\n" % (len(e) + 4, e) for e in events)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    return head + b"\r\n" + body + b"0\r\n\r\n"


def completion_response(tokens: int) -> bytes:
    content = "".join(f"w{i} " for i in range(tokens))
    body = orjson.dumps(
        {
            "choices": [{"message": {"content": content}}],
            "usage": {"completion_tokens": tokens, "prompt_tokens": 2},
        }
    )
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def test_stream_without_done_is_an_error_end_to_end(scripted: Any) -> None:
    url = await scripted(lambda n: chunked_response(events(6, done=n > 4 and n % 2 == 0)), False)
    report = await loadgen.run_burst(url, Scenario("t", stream=True, tokens=6), 4)
    assert report.requests == 4 and report.errors == 4  # one connection each: all first requests
    assert report.error_reasons == [("no [DONE] at the end", 4)]
    report = await loadgen.run_closed_loop(
        url, Scenario("t", stream=True, tokens=6), 1, seconds=0.1, warmup_seconds=0
    )
    assert report.errors > 0 and report.requests - report.errors > 0  # alternating on one conn


async def test_server_closing_idle_connections_is_not_an_error(scripted: Any) -> None:
    url = await scripted(lambda n: completion_response(5), True)
    scenario = Scenario("t", stream=False, tokens=5)
    report = await loadgen.run_closed_loop(url, scenario, 2, seconds=0.2, warmup_seconds=0)
    assert report.errors == 0, report.error_reasons
    assert report.requests > 4


async def test_a_server_that_never_answers_times_out(scripted: Any) -> None:
    url = await scripted(lambda n: None, False)
    report = await loadgen.run_burst(
        url, Scenario("t", stream=True, tokens=4), 2, request_timeout=0.2
    )
    assert report.error_reasons == [("timeout after 0.2 s", 2)]


def verify(events: list[bytes], tokens: int, piece: int = 7) -> int:
    """Feed the events in small pieces, as they may arrive, and finish."""
    data = b"".join(e + b"\r\n\r\n" for e in events)
    verifier = StreamVerifier(tokens)
    for i in range(0, len(data), piece):
        verifier.feed(data[i : i + piece])
    return verifier.finish()


def test_the_stream_verifier_accepts_a_correct_stream_in_any_pieces() -> None:
    assert verify(events(5), 5, piece=1) == 5
    assert verify(events(5), 5, piece=10_000) == 5
    split_data = b'event: message\ndata: {"choices":[{"delta":\ndata: {"content":"w0 "}}]}'
    assert verify([split_data, *events(5)[2:]], 5) == 5
    coalesced = b'data: {"choices":[{"delta":{"content":"w0 w1 w2 w3 w4 "}}]}'
    assert verify([coalesced, *events(0)[1:-2], *events(5)[-2:]], 5) == 1


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (events(5, done=False), "no [DONE] at the end"),
        (events(5)[:3] + events(5)[2:], "streamed content differs from the expected text"),
        (events(5)[:2] + events(5)[3:], "streamed content differs from the expected text"),
        (events(5, usage=0), "usage completion_tokens per chunk []"),
        (events(5, usage=2), "usage completion_tokens per chunk [5, 5]"),
        ([*events(5), b'data: {"choices":[]}'], "event after [DONE]"),
        ([b"data: {nope", *events(5)], "data line is not JSON"),
        ([b'data: {"error":{"message":"engine died"}}', *events(5)], "stream error: "),
        ([e for e in events(5) if b'finish_reason":"length' not in e], "no finish_reason"),
    ],
)
def test_the_stream_verifier_rejects_broken_streams(broken: list[bytes], reason: str) -> None:
    with pytest.raises(BadResponse, match="^" + reason.replace("[", r"\[").replace("]", r"\]")):
        verify(broken, 5)


def test_the_stream_verifier_rejects_a_body_ending_inside_an_event() -> None:
    verifier = StreamVerifier(2)
    verifier.feed(b"".join(e + b"\n\n" for e in events(2)[:-1]) + b"data: [DONE]\n")
    with pytest.raises(BadResponse, match="the body ends inside an event"):
        verifier.finish()


@pytest.mark.parametrize("piece", [1, 2, 5, 64, 100_000])
def test_the_dechunker_decodes_in_any_pieces(piece: int) -> None:
    wire = chunked_response(events(7)).split(b"\r\n\r\n", 1)[1]
    decoder = loadgen.Dechunker()
    payload = b"".join(decoder.feed(wire[i : i + piece]) for i in range(0, len(wire), piece))
    assert payload == b"".join(e + b"\r\n\r\n" for e in events(7))
    assert decoder.done and decoder.buffer == b""


def test_the_dechunker_rejects_bad_framing() -> None:
    with pytest.raises(ValueError, match="no CRLF after a chunk"):
        loadgen.Dechunker().feed(b"3\r\nabcd\r\n")
    with pytest.raises(ValueError):
        loadgen.Dechunker().feed(b"zz\r\nabc\r\n")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nope", "malformed completion"),
        (b'{"choices":[]}', "malformed completion"),
        (completion_response(4).split(b"\r\n\r\n")[1], "content differs"),
        (
            completion_response(5)
            .split(b"\r\n\r\n")[1]
            .replace(b'"prompt_tokens":2', b'"prompt_tokens":0'),
            "usage.prompt_tokens 0",
        ),
        (
            completion_response(5)
            .split(b"\r\n\r\n")[1]
            .replace(b'completion_tokens":5', b'completion_tokens":4'),
            "usage.completion_tokens 4 != 5",
        ),
    ],
)
def test_the_completion_verifier_rejects_wrong_answers(body: bytes, reason: str) -> None:
    with pytest.raises(BadResponse, match=reason):
        loadgen.verify_completion(body, 5)
    loadgen.verify_completion(completion_response(5).split(b"\r\n\r\n")[1], 5)


async def test_engine_answers_pipelined_and_split_requests(base_url: str) -> None:
    port = int(base_url.split(":")[2].split("/")[0])
    body = b'{"messages":[{"role":"user","content":"one two three"}],"max_tokens":2}'
    request = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + b"GET /health HTTP/1.1\r\n\r\n" + request[:9])
        await asyncio.sleep(0.01)
        for i in range(9, len(request)):  # the third one byte by byte
            writer.write(request[i : i + 1])
            await writer.drain()
        answers = []
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            answers.append((head.split(b" ")[1], await reader.readexactly(length)))
    finally:
        writer.close()
        await writer.wait_closed()
    assert [status for status, _ in answers] == [b"200"] * 3 and answers[1][1] == b""
    completion = orjson.loads(answers[2][1])
    assert completion["choices"][0]["message"]["content"] == "w0 w1 "
    assert completion["usage"] == {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2}


async def test_engine_stops_a_stream_whose_client_left(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    original = engine.token_event

    def counted(i: int) -> bytes:
        sent.append(i)
        return original(i)

    monkeypatch.setattr(engine, "token_event", counted)
    port = int(base_url.split(":")[2].split("/")[0])
    body = b'{"model":"slow","messages":[{"content":"x"}],"max_tokens":1000,"stream":true}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % len(body))
    writer.write(body)
    await reader.readuntil(b'"w2 "')
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.03)
    count = len(sent)
    await asyncio.sleep(0.05)
    assert 3 <= count == len(sent) < 20
