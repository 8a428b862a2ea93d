"""The batch workflow's activities, run by the gateway: validating the input file, running one
line as a live request, and writing the output and error files.

A line runs through `Inference.begin` like a request from a client: routed, admitted against its
key's limits and budgets (by the key's id: the secret is never kept), masked, started as the
model's own activity at the lowest priority class, answered through Redis, and settled with
quota. Its answer is recorded once (store.py) before it is settled, and settling is idempotent
per request id, so however often a line's activity runs (its gateway died, Temporal retried it),
the batch has one answer per line and its usage is charged once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from datetime import timedelta
from typing import Any

import orjson
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tiller.common.errors import (
    InvalidRequest,
    ModelNotFound,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.priorities import LOWEST_PRIORITY
from tiller.gateway.batches.lines import (
    Line,
    Validation,
    error_line,
    numbered,
    output_line,
    parse_line,
    validate,
)
from tiller.gateway.batches.live import LiveTraffic
from tiller.gateway.batches.shared import (
    CHECKPOINT_ACTIVITY,
    COMPLETED,
    EXPIRED,
    FINALIZE_ACTIVITY,
    FINALIZING,
    IN_PROGRESS,
    LINE_ACTIVITY,
    TERMINAL,
    VALIDATE_ACTIVITY,
    VALIDATING,
    Ending,
    LineJob,
)
from tiller.gateway.batches.store import BatchStore
from tiller.gateway.file_store import FileStore
from tiller.gateway.inference import Inference
from tiller.gateway.responses_store import RESPONSE_ID_PREFIX
from tiller.protos.quota.v1 import quota_pb2

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
# A line refused by a rate limit waits this long at most, then tries again (a budget that frees
# up only tomorrow is the line's error instead).
RATE_LIMIT_WAIT_SECONDS = 60.0
INPUTS_CACHED = 4  # input files kept split into lines, in memory, by the gateway


class BatchActivities:
    def __init__(
        self,
        inference: Inference,
        files: FileStore,
        store: BatchStore,
        live: LiveTraffic,
        yield_seconds: float,
    ) -> None:
        self.inference, self.files, self.store = inference, files, store
        self.live, self.yield_seconds = live, yield_seconds
        self._inputs: collections.OrderedDict[str, list[tuple[int, bytes]]] = (
            collections.OrderedDict()
        )
        self._loading: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    def all(self) -> list[Any]:
        return [self.validate, self.line, self.checkpoint, self.finalize]

    # --- validation --------------------------------------------------------------------------

    @activity.defn(name=VALIDATE_ACTIVITY)
    async def validate(self, batch_id: str) -> int:
        """The number of lines, once every line is valid (the batch is in progress then); -1 if
        any is not (the batch failed, its errors and error file name the lines)."""
        batch = await self.store.get(batch_id)
        if batch is None or batch.status in TERMINAL:
            return -1
        try:
            data = await self.files.content(batch.input_file_id)
        except NotFound:  # deleted since the batch was created
            checked = Validation()
            checked.refuse(0, None, "file_not_found", _input_gone(batch.input_file_id))
        else:
            checked = await asyncio.to_thread(validate, data, batch.endpoint)
            await self._known_models(checked)
        if checked.errors:
            checked.in_order()
            lines = checked.error_lines
            error_file = await self._write(batch.id, batch.owner, "error", lines)
            assert error_file is not None  # there are lines to write
            await self.store.failed_validation(batch.id, checked.total, checked.errors, error_file)
            log.info("batch refused", extra={"batch_id": batch_id, "bad": len(lines)})
            return -1
        await self.store.validated(batch.id, checked.total)
        await self.store.transition(batch.id, IN_PROGRESS, VALIDATING)
        return checked.total

    async def _known_models(self, checked: Validation) -> None:
        """Lines naming a model that does not exist are refused with the file, not one by one."""
        for model, lines in checked.models.items():
            try:
                await self.inference.routes.get(model)
            except ModelNotFound as error:
                for number, custom_id in lines:
                    checked.refuse(number, custom_id, "model_not_found", error)

    # --- one line ----------------------------------------------------------------------------

    @activity.defn(name=LINE_ACTIVITY)
    async def line(self, job: LineJob) -> bool:
        """Run one line (or report it again, if an earlier attempt recorded its answer);
        whether it succeeded."""
        recorded = await self.store.answered(job.batch_id, job.index)
        if recorded is None:
            try:
                number, raw = (await self._input(job.input_file_id))[job.index]
            except NotFound:  # the input file was deleted while the batch ran
                ok, record = False, {"line": _unread(job), "settlement": None}
            else:
                line = parse_line(number, raw, job.endpoint)
                beat = asyncio.create_task(_heartbeats())
                try:
                    await self.live.quiet(self.yield_seconds)  # live requests go first
                    ok, record = await self._run(job, line)
                finally:
                    beat.cancel()
            recorded = ok, record
            if not await self.store.answer(job.batch_id, job.index, ok, record):
                await self._release(record)  # another attempt answered it first: that stands
                recorded = await self.store.answered(job.batch_id, job.index)
                assert recorded is not None
        ok, record = recorded
        await self._settle(record)
        return ok

    async def _run(self, job: LineJob, line: Line) -> tuple[bool, dict[str, Any]]:
        prefix = RESPONSE_ID_PREFIX if line.asked is not None else None
        try:
            call = await self.inference.begin(
                "", line.request, LOWEST_PRIORITY, id_prefix=prefix, key_id=job.key_id
            )
            with call.owned():
                result = await call.result(caller=False)
                settlement = call.end(result.usage)
        except RateLimited as error:
            wait = error.retry_after
            if wait is None or wait > RATE_LIMIT_WAIT_SECONDS:
                return False, {"line": error_line(line, error), "settlement": None}
            raise ApplicationError(
                "rate limited", next_retry_delay=timedelta(seconds=max(wait, 0.5))
            ) from None
        except ServiceUnavailable:
            raise  # the stack, not the line: tried again
        except TillerError as error:
            return False, {"line": error_line(line, error), "settlement": None}
        body = line.body(call.request_id, call.model, call.accepted.created, result)
        return True, {
            "line": output_line(line, call.request_id, body),
            "settlement": _plain(settlement),
        }

    async def _settle(self, record: dict[str, Any]) -> None:
        """Charge the line's usage: again after a retry does nothing (idempotent per id)."""
        if record.get("settlement"):
            await self.inference.settler.send_now(quota_pb2.Settlement(**record["settlement"]))

    async def _release(self, record: dict[str, Any]) -> None:
        """A second answer of a line that was answered: its lease goes, nothing is charged."""
        if settlement := record.get("settlement"):
            release = {k: settlement[k] for k in ("key_id", "request_id")}
            await self.inference.settler.send_now(quota_pb2.Settlement(**release))

    async def _input(self, file_id: str) -> list[tuple[int, bytes]]:
        """The input file's lines, read once per gateway while its batch runs."""
        async with self._loading[file_id]:
            if file_id not in self._inputs:
                self._inputs[file_id] = numbered(await self.files.content(file_id))
                while len(self._inputs) > INPUTS_CACHED:
                    self._inputs.popitem(last=False)
            self._inputs.move_to_end(file_id)
            return self._inputs[file_id]

    # --- the end -----------------------------------------------------------------------------

    @activity.defn(name=CHECKPOINT_ACTIVITY)
    async def checkpoint(self, batch_id: str) -> str:
        """The batch's status, when a run continues as new (a cancel may have come between)."""
        return await self.store.status(batch_id) or ""

    @activity.defn(name=FINALIZE_ACTIVITY)
    async def finalize(self, ending: Ending) -> None:
        """Write the output and error files, in the input's order, and end the batch."""
        batch = await self.store.get(ending.batch_id)
        if batch is None or batch.status in TERMINAL:
            return  # an earlier attempt ended it
        if ending.status == COMPLETED:
            await self.store.transition(batch.id, FINALIZING, IN_PROGRESS)
        answers: dict[bool, dict[int, dict[str, Any]]] = {True: {}, False: {}}
        for ok in (True, False):
            async for index, record in self.store.answers(batch.id, ok):
                answers[ok][index] = record["line"]
        if ending.status == EXPIRED:
            await self._expired(batch.input_file_id, batch.endpoint, batch.total, answers)
        outputs, errors = ([answers[ok][i] for i in sorted(answers[ok])] for ok in (True, False))
        output_file = await self._write(batch.id, batch.owner, "output", outputs)
        error_file = await self._write(batch.id, batch.owner, "error", errors)
        await self.store.ended(
            batch.id, ending.status, output_file, error_file, len(outputs), len(errors)
        )
        log.info(
            "batch ended",
            extra={"batch_id": batch.id, "status": ending.status, "lines": len(outputs)},
        )

    async def _expired(
        self,
        file_id: str,
        endpoint: str,
        total: int,
        answers: dict[bool, dict[int, dict[str, Any]]],
    ) -> None:
        """Lines the window closed on before they started: each an error line (none if the
        input file was deleted meanwhile)."""
        try:
            lines = await self._input(file_id)
        except NotFound:
            return
        for index in range(total):
            if index not in answers[True] and index not in answers[False]:
                line = parse_line(*lines[index], endpoint)
                refusal = TillerError(
                    "This request could not be executed before the completion window expired."
                )
                entry = error_line(line, refusal)
                entry["response"], entry["error"]["code"] = None, "batch_expired"
                answers[False][index] = entry

    async def _write(
        self, batch_id: str, owner: str, kind: str, lines: list[dict[str, Any]]
    ) -> str | None:
        """The lines as a JSONL file of the batch's owner; its id is the same however often
        this runs (a retried step rewrites the file, never leaves a second one)."""
        if not lines:
            return None
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        file_id = "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:32]
        purpose = "batch_output"
        stored = await self.files.put(
            owner, f"{batch_id}_{kind}.jsonl", purpose, data, file_id=file_id
        )
        return stored.id


def _input_gone(file_id: str) -> InvalidRequest:
    return InvalidRequest(f"The input file {file_id} was deleted.", param="input_file_id")


def _unread(job: LineJob) -> dict[str, Any]:
    """The error line of a line that could not be read any more."""
    error = _input_gone(job.input_file_id)
    return {
        "id": None,
        "custom_id": None,
        "response": None,
        "error": {"code": "file_not_found", "message": error.message, "line": None},
    }


async def _heartbeats() -> None:
    """The line's gateway is alive: if it dies, Temporal runs the line elsewhere."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _plain(settlement: quota_pb2.Settlement | None) -> dict[str, Any] | None:
    if settlement is None:
        return None
    return {
        "key_id": settlement.key_id,
        "request_id": settlement.request_id,
        "model": settlement.model,
        "completed": settlement.completed,
        "prompt_tokens": settlement.prompt_tokens,
        "completion_tokens": settlement.completion_tokens,
    }
