"""The fuzz tier: requests generated from the REST API's own contract (/openapi.json, through
Schemathesis) and from hostile mutations (Hypothesis: deep nesting, huge and non-finite numbers,
invalid UTF-8, duplicate keys, enormous strings, wrong Content-Types, odd headers, bad keys),
over REST and gRPC, against the real stack, with a bounded budget.

Every answer must be: below 500; an error in OpenAI's JSON shape; named by an x-request-id; on
time (no hang). Afterwards the stack must be ready, the fuzzing key's concurrency slots all
free, and every line of every service's log a JSON object. The summary (requests per endpoint,
statuses, anomalies) prints at the end (`./dev test tests/fuzz -s`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from redis import Redis
from schemathesis.core import NotSet
from schemathesis.core.result import Ok
from schemathesis.transport.serialization import Binary

from tests.support import Stack, wait_for
from tiller.contract.keys import key_id_of
from tiller.gateway.openapi import document
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc
from tiller.quota.keys import QuotaLayout

# Budget: examples per generated group (the whole tier stays around a minute on 2 cores).
CONTRACT_EXAMPLES = 20
HOSTILE_EXAMPLES = 120
GRPC_EXAMPLES = 60
TIMEOUT_SECONDS = 30.0  # an answer slower than this is a hang
FUZZ = settings(
    max_examples=CONTRACT_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
OUR_LOGS = ("gateway", "router", "quota", "worker")


@dataclass
class Tally:
    """What the tier sent and got back, printed at the end."""

    sent: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    logs: str = ""  # what the every-line-is-JSON check read, once it has run

    def check(self, endpoint: str, response: httpx.Response) -> None:
        self.sent[(endpoint, response.status_code)] += 1
        status, headers = response.status_code, response.headers
        problems = []
        if status >= 500:
            problems.append(f"status {status}")
        if "x-request-id" not in headers:
            problems.append("no x-request-id")
        if status >= 400:
            try:
                error = orjson.loads(response.content)["error"]
                assert {"message", "type", "param", "code"} <= set(error)
            except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
                problems.append("an error body that is not OpenAI's JSON")
        if problems:
            self.anomalies.append(f"{endpoint}: {', '.join(problems)}: {response.content[:160]!r}")

    def summary(self) -> str:
        lines = [f"{'endpoint':48} {'status':>16}  {'requests':>8}"]
        for (endpoint, status), count in sorted(self.sent.items(), key=str):
            lines.append(f"{endpoint:48} {status!s:>16}  {count:>8}")
        total = sum(self.sent.values())
        lines.append(f"total {total} requests, {len(self.anomalies)} anomalies")
        return "\n".join(lines + self.anomalies[:20] + ([self.logs] if self.logs else []))


TALLY = Tally()


@dataclass(frozen=True)
class Target:
    base: str  # http://127.0.0.1:port
    key: str  # the fuzzing key: member role, small concurrency
    key_id: str


@pytest.fixture(scope="module")
def target(stack: Stack) -> Iterator[Target]:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    spec = {"name": "fuzz", "role": "member", "limits": {"concurrency": 4, "rpm": 100_000}}
    created = httpx.post(f"{stack.base_url[:-3]}/admin/keys", json=spec, headers=headers)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    yield Target(stack.base_url[:-3], key, key_id_of(key))


def _send(target: Target, method: str, path: str, **kwargs: Any) -> httpx.Response:
    started = time.monotonic()
    response = httpx.request(method, f"{target.base}{path}", timeout=TIMEOUT_SECONDS, **kwargs)
    if time.monotonic() - started > TIMEOUT_SECONDS:  # pragma: no cover - httpx raises first
        TALLY.anomalies.append(f"{method} {path}: no answer in {TIMEOUT_SECONDS} s")
    return response


# --- generated from the contract ---------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{o.method} {o.path}" for o in OPERATIONS])
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_contracts_requests(target: Target, operation: Any, mode: str) -> None:
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        # The contract's own headers, then the fuzzing key (its generated ones are not keys).
        given_headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        headers = {**given_headers, "authorization": f"Bearer {target.key}"}
        # The standard library's encoder: integers past 64 bits, as any client may send.
        if mode == "positive" and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "demo"  # a served model: the request runs, not only parses
        body: bytes | None = None
        form = None
        if case.media_type == "multipart/form-data" and isinstance(case.body, dict):
            form = _form_parts(case.body)  # an upload, as the SDKs send one
        elif isinstance(case.body, bytes):  # negative cases: bytes that are not the media type
            body = case.body
        elif case.body is not None and not isinstance(case.body, NotSet):
            body = json.dumps(case.body).encode()
        if body is not None:
            headers.setdefault("content-type", "application/json")
        try:
            response = _send(
                target,
                case.method,
                case.formatted_path,
                headers={k: str(v) for k, v in headers.items()},
                params=case.query,
                content=body,
                files=form,
            )
        except (httpx.LocalProtocolError, httpx.InvalidURL):
            return  # what httpx itself refuses to send never reached the gateway
        TALLY.check(f"{case.method} {operation.path}", response)

    run()
    assert not TALLY.anomalies, "\n".join(TALLY.anomalies[:20])


def _form_parts(fields: dict[str, Any]) -> list[tuple[str, tuple[str | None, bytes]]]:
    """A generated form: its binary values as files, the others as text fields."""
    parts: list[tuple[str, tuple[str | None, bytes]]] = []
    for name, value in fields.items():
        if isinstance(value, Binary):
            parts.append((name, ("upload.jsonl", value.data)))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            parts.append((name, (None, text.encode())))
    return parts


# --- hostile mutations ------------------------------------------------------------------------

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just("x" * 200_000),
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A body (as bytes) and its Content-Type: a valid chat with one part made hostile, or
    bytes that are no JSON at all."""
    kind = draw(st.sampled_from(["mutated", "deep", "raw", "duplicate", "utf8", "big-number"]))
    valid: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    if kind == "mutated":
        name = draw(
            st.sampled_from(
                [
                    "model",
                    "messages",
                    "temperature",
                    "max_tokens",
                    "stop",
                    "tools",
                    "n",
                    "input",
                    "tool_choice",
                    "response_format",
                    "stream",
                    "top_p",
                    "seed",
                    "instructions",
                ]
            )
        )
        valid[name] = draw(
            st.recursive(
                LEAVES,
                lambda c: (
                    st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3)
                ),
                max_leaves=8,
            )
        )
        body = json.dumps(valid).encode()
    elif kind == "deep":
        where = draw(st.sampled_from(["tool_choice", "response_format", "metadata", "top_k"]))
        valid[where] = _nested(draw(st.integers(min_value=60, max_value=600)))
        body = json.dumps(valid).encode()  # deeper than orjson writes
    elif kind == "raw":
        body = draw(st.binary(max_size=200))
    elif kind == "duplicate":
        body = b'{"model": "demo", "model": "x", "messages": [{"role": "user", "content": "hi"}]}'
    elif kind == "utf8":
        body = b'{"model": "demo", "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}'
    else:
        number = draw(st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "9" * 400]))
        body = (
            b'{"model": "demo", "temperature": %s, "messages": [{"role": "user", "content": "hi"}]}'
            % number.encode()
        )
    media = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "text/plain",
                "",
                "application/x-www-form-urlencoded",
                "application/json; charset=latin-1",
                "multipart/form-data",
            ]
        )
    )
    return body, media


@st.composite
def hostile_headers(draw: st.DrawFn, key: str) -> dict[str, str]:
    auth = draw(
        st.sampled_from(
            [
                f"Bearer {key}",
                f"Bearer {key}",
                "Bearer",
                "",
                "Basic Zm9vOmJhcg==",
                "Bearer tk-" + "x" * 5000,
                f"bearer   {key}  ",
            ]
        )
    )
    headers = {"authorization": auth} if auth else {}
    if draw(st.booleans()):
        headers["x-tiller-priority"] = draw(
            st.sampled_from(
                ["1", "5", "0", "6", "²", "٣", "-1", " 3 ", "99999999999999999999", "x"]
            )
        )
    if draw(st.booleans()):
        headers["last-event-id"] = draw(st.text(max_size=40))
    return headers


def test_hostile_requests(target: Target) -> None:
    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        body=hostile_bodies(),
        headers=hostile_headers(target.key),
    )
    def run(endpoint: str, body: tuple[bytes, str], headers: dict[str, str]) -> None:
        content, media = body
        given = {**headers, "content-type": media} if media else headers
        # As bytes on the wire: "²" arrives as the byte 0xB2, as from curl.
        sent = {k: v.encode("latin-1", "ignore") or v.encode() for k, v in given.items()}
        try:
            response = _send(target, "POST", endpoint, headers=sent, content=content)
        except httpx.LocalProtocolError:
            return  # a header httpx itself refuses to send: nothing reached the gateway
        TALLY.check(f"POST {endpoint} (hostile)", response)

    run()
    assert not TALLY.anomalies, "\n".join(TALLY.anomalies[:20])


# --- gRPC -----------------------------------------------------------------------------------

GRPC_ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def generate_requests(draw: st.DrawFn) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(
        model=draw(st.one_of(st.just("demo"), st.text(max_size=300), st.just("m" * 20_000))),
        messages=[
            inference_pb2.ChatMessage(
                role=draw(st.sampled_from(["user", "system", "robot", ""])),
                content=draw(st.text(max_size=50)),
            )
            for _ in range(draw(st.integers(min_value=0, max_value=3)))
        ],
        stop=draw(st.lists(st.text(max_size=5), max_size=6)),
    )
    for name in ("temperature", "top_p", "presence_penalty"):
        if draw(st.booleans()):
            setattr(request, name, draw(FLOATS))
    if draw(st.booleans()):
        request.max_tokens = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    return request


def test_grpc_requests(stack: Stack, target: Target) -> None:
    address = f"127.0.0.1:{stack.grpc_port}"
    codes: Counter[str] = Counter()

    @settings(
        max_examples=GRPC_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=generate_requests(), raw=st.binary(max_size=64), streamed=st.booleans())
    def run(request: inference_pb2.GenerateRequest, raw: bytes, streamed: bool) -> None:
        metadata = (("authorization", f"Bearer {target.key}"),)
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            for call in ("typed", "raw"):
                try:
                    if call == "raw":
                        channel.unary_unary("/tiller.inference.v1.Inference/Generate")(
                            raw, metadata=metadata, timeout=TIMEOUT_SECONDS
                        )
                    elif streamed:
                        list(
                            stub.GenerateStream(request, metadata=metadata, timeout=TIMEOUT_SECONDS)
                        )
                    else:
                        stub.Generate(request, metadata=metadata, timeout=TIMEOUT_SECONDS)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                codes[code.name] += 1
                TALLY.sent[(f"grpc Generate ({call})", code.name)] += 1
                if code not in GRPC_ALLOWED:
                    TALLY.anomalies.append(f"grpc {call}: {code.name}")

    run()
    assert not TALLY.anomalies, "\n".join(TALLY.anomalies[:20])


# --- afterwards -------------------------------------------------------------------------------


def test_afterwards_the_stack_is_ready_and_no_slot_leaked(stack: Stack, target: Target) -> None:
    ready = httpx.get(f"{target.base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    redis = Redis.from_url(stack.redis_url)
    held = f"{QuotaLayout('tiller:').base}conc:k:{target.key_id}"
    try:
        assert wait_for(lambda: redis.zcard(held) == 0, timeout=10), "a concurrency slot leaked"
    finally:
        redis.close()


def test_every_line_of_every_service_log_is_json(stack: Stack) -> None:
    logs = stack.data_dir / "logs"
    odd, read = [], 0
    for name in OUR_LOGS:
        for number, line in enumerate((logs / f"{name}.log").read_text().splitlines(), 1):
            read += 1
            if line.strip() and not line.startswith("{"):
                odd.append(f"{name}.log:{number}: {line[:160]}")
    TALLY.logs = (
        f"log lines read in {', '.join(f'{name}.log' for name in OUR_LOGS)}: {read}; "
        f"not JSON (grep -v '^{{'): {len(odd)}"
    )
    print("\n" + TALLY.logs)
    assert not odd, "\n".join(odd[:20])


def test_the_contract_is_valid_openapi_3_1(stack: Stack) -> None:
    served = httpx.get(f"{stack.base_url[:-3]}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == document()
    validate(served.json())  # openapi-spec-validator: raises on an invalid document
    assert served.json()["openapi"] == "3.1.0"
