"""PII masking at the edge: every text the engine will see is masked before the request is
started, so neither Temporal, Redis nor the engine gets the originals.

The texts: message contents (content parts arrive joined) and names, assistant tool-call
arguments, a legacy `prompt`, embeddings inputs. The policies come from the route (the model's
and its fallbacks', models.yaml) and the key; see common/pii/policy.py. Logs and metrics hold counts
by type, never values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable

from tiller.common.errors import PiiDetected
from tiller.common.pii.policy import MASK, Policies, Policy
from tiller.common.pii.recognizers import RecognizerSpec
from tiller.common.pii.redaction import Blocked, Redaction
from tiller.common.pii.scanner import Scanner, ascii_forms
from tiller.gateway import metrics
from tiller.gateway.protocol import ChatRequest
from tiller.protos.quota.v1 import quota_pb2
from tiller.protos.router.v1 import router_pb2
from tiller.worker.shared import Message

log = logging.getLogger(__name__)
# A router from before PII policies sends none: fail closed, as the default policy does.
WITHOUT_SETTINGS = (Policy(MASK),)
# Masking costs about 0.3 ms per KB of digit-dense text (bench/pii_masking.py): prompts this
# long are masked in a thread, so the gateway's other streams go on meanwhile.
IN_THREAD_CHARACTERS = 16 * 1024


class Masking:
    """Masks requests; keeps one scanner per detection setup (models.yaml `pii`)."""

    def __init__(self) -> None:
        self._scanners: dict[tuple[float, str], Scanner] = {}
        ascii_forms("\uff10")  # builds its table (0.1 s) now, not in the first request

    def scanner(self, settings: router_pb2.PiiSettings) -> Scanner:
        key = (settings.min_score, settings.recognizers_json)
        scanner = self._scanners.get(key)
        if scanner is None:
            specs = json.loads(settings.recognizers_json) if settings.recognizers_json else []
            scanner = Scanner([RecognizerSpec.model_validate(s) for s in specs], settings.min_score)
            if len(self._scanners) > 16:  # models.yaml reloads: keep the recent ones
                self._scanners.pop(next(iter(self._scanners)))
            self._scanners[key] = scanner
        return scanner

    async def mask_soon(
        self, chat: ChatRequest, route: router_pb2.Route, principal: quota_pb2.Principal
    ) -> tuple[ChatRequest, dict[str, str]]:
        """`mask`, in a thread for a long request."""
        found = texts(chat)  # walked once: for the size here and the scan in mask()
        if sum(len(t) for t in found) < IN_THREAD_CHARACTERS:
            return self.mask(chat, route, principal, found)
        return await asyncio.to_thread(self.mask, chat, route, principal, found)

    def mask(
        self,
        chat: ChatRequest,
        route: router_pb2.Route,
        principal: quota_pb2.Principal,
        found: list[str] | None = None,
    ) -> tuple[ChatRequest, dict[str, str]]:
        """The request with its personal data masked, and the placeholders to restore in the
        answer (mask+restore); raises PiiDetected when a policy blocks what it carries."""
        started = time.perf_counter()
        policies = Policies(
            (
                *(
                    (Policy.of(p.mode, tuple(p.types)) for p in route.pii.policies)
                    if route.HasField("pii")
                    else WITHOUT_SETTINGS
                ),
                Policy.of(principal.pii_policy, tuple(principal.pii_types)),
            )
        )
        if not policies.active:
            return chat, {}
        redaction = Redaction(self.scanner(route.pii), policies)
        try:
            redaction.check(texts(chat) if found is None else found)
        except Blocked as blocked:
            metrics.PII_BLOCKED.inc()
            log.info("request blocked for personal data", extra={"pii_types": blocked.types})
            raise PiiDetected(
                "The request contains personal data this model or key does not accept: "
                f"{', '.join(blocked.types)}.",
                param="messages" if chat.messages else "prompt" if chat.prompt else "input",
            ) from None
        masked = rewrite(chat, redaction.mask)
        for type_, count in redaction.counts.items():
            metrics.PII_DETECTIONS.labels(type_, policies.mode_for(type_)).inc(count)
        if redaction.counts:
            log.info("personal data masked", extra={"pii_counts": dict(redaction.counts)})
        metrics.PII_SECONDS.observe(time.perf_counter() - started)
        return masked, redaction.vault


def texts(chat: ChatRequest) -> list[str]:
    """Every text of the request the engine will see."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    rewrite(chat, collect)
    return found


def rewrite(chat: ChatRequest, change: Callable[[str], str]) -> ChatRequest:
    """The request with `change` applied to each text the engine will see."""
    return dataclasses.replace(
        chat,
        messages=[_message(m, change) for m in chat.messages],
        prompt=change(chat.prompt) if chat.prompt is not None else None,
        inputs=[change(t) for t in chat.inputs] if chat.inputs is not None else None,
    )


def _message(message: Message, change: Callable[[str], str]) -> Message:
    calls = message.tool_calls
    if calls:
        calls = [
            {**c, "function": {**c["function"], "arguments": change(c["function"]["arguments"])}}
            for c in calls
        ]
    content = change(message.content) if message.content is not None else None
    name = change(message.name) if message.name else message.name  # engines see it too
    return dataclasses.replace(message, content=content, name=name, tool_calls=calls)
