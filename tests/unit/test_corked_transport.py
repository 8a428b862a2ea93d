"""The gateway's corked transport: what one turn of the event loop writes to a connection goes
out in one write, in order; closing sends what waits first; a closed connection gets nothing."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tiller.gateway.edge import CorkedTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def corked(recorder: Recorder) -> CorkedTransport:
    return CorkedTransport(cast(asyncio.Transport, recorder))


async def test_one_turns_writes_go_out_as_one() -> None:
    sent = Recorder()
    transport = corked(sent)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b'{"id": 1}')
    assert sent.writes == []  # nothing yet: the head waits for the body
    await asyncio.sleep(0)
    assert sent.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"id": 1}']
    transport.write(b"data: 2\n\n")  # a later turn: its own write
    await asyncio.sleep(0)
    assert sent.writes[1:] == [b"data: 2\n\n"]


async def test_close_sends_what_waits_first() -> None:
    sent = Recorder()
    transport = corked(sent)
    transport.write(b"last")
    transport.close()
    assert sent.writes == [b"last"] and sent.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert sent.writes == [b"last"]


async def test_a_connection_closed_under_it_gets_nothing() -> None:
    sent = Recorder()
    transport = corked(sent)
    transport.write(b"lost")
    sent.closed = True  # the client went away in the same turn
    await asyncio.sleep(0)
    assert sent.writes == []
    assert transport.get_extra_info("peername") == "info:peername"  # the rest is the transport's
