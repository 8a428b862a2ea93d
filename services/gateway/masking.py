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

from tiller.common.errors import PiiDetected
from tiller.common.pii.policy import MASK, Policies, Policy
from tiller.common.pii.recognizers import RecognizerSpec
from tiller.common.pii.redaction import Blocked, Redaction
from tiller.common.pii.scanner import Scanner, ascii_forms
from tiller.contract.requests import Chat, Embedding, TextCompletion, texts_of
from tiller.gateway import metrics
from tiller.gateway.protocol import ApiRequest
from tiller.protos.quota.v1 import quota_pb2
from tiller.protos.router.v1 import router_pb2

log = logging.getLogger(__name__)
# A router from before PII policies sends none: fail closed, as the default policy does.
WITHOUT_SETTINGS = (Policy(MASK),)
# Masking costs about 0.2 ms per KB of digit-dense text (bench/pii_masking.py): prompts this
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
        self, chat: ApiRequest, route: router_pb2.Route, principal: quota_pb2.Principal
    ) -> tuple[ApiRequest, dict[str, str]]:
        """`mask`, in a thread for a long request."""
        found = texts_of(chat.ask)  # walked once: for the size here and the scan in mask()
        if sum(len(t) for t in found) < IN_THREAD_CHARACTERS:
            return self.mask(chat, route, principal, found)
        return await asyncio.to_thread(self.mask, chat, route, principal, found)

    def mask(
        self,
        chat: ApiRequest,
        route: router_pb2.Route,
        principal: quota_pb2.Principal,
        found: list[str] | None = None,
    ) -> tuple[ApiRequest, dict[str, str]]:
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
            redaction.check(texts_of(chat.ask) if found is None else found)
        except Blocked as blocked:
            metrics.PII_BLOCKED.inc()
            log.info("request blocked for personal data", extra={"pii_types": blocked.types})
            raise PiiDetected(
                "The request contains personal data this model or key does not accept: "
                f"{', '.join(blocked.types)}.",
                param=_TEXTS_PARAM[type(chat.ask)],
            ) from None
        masked = dataclasses.replace(chat, ask=chat.ask.map_texts(redaction.mask))
        for type_, count in redaction.counts.items():
            metrics.PII_DETECTIONS.labels(type_, policies.mode_for(type_)).inc(count)
        if redaction.counts:
            log.info("personal data masked", extra={"pii_counts": dict(redaction.counts)})
        metrics.PII_SECONDS.observe(time.perf_counter() - started)
        return masked, redaction.vault


# The request's parameter that holds the texts, by the kind of request.
_TEXTS_PARAM = {Chat: "messages", TextCompletion: "prompt", Embedding: "input"}
