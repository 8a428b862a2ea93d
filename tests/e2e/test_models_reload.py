"""models.yaml changed while the stack serves traffic: a new model appears and answers within
seconds with no request failing meanwhile; a broken edit is refused, named, and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.own_stack import MODELS, OwnStack

HOT = """\
  hot:
    aliases: [hot-alias]
    deployments:
      - name: hot-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        engine_model: demo
        task_queue: restart.hot
        max_concurrency: 8
"""


async def test_a_model_added_while_serving_answers_and_a_broken_edit_is_refused(
    own_stack: OwnStack,
) -> None:
    headers = {"authorization": f"Bearer {own_stack.admin_key}"}
    outcomes: list[int] = []
    stop = asyncio.Event()

    async def load(http: httpx.AsyncClient, model: str) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "steady"}]}
        while not stop.is_set():
            reply = await http.post("/chat/completions", json=body)
            outcomes.append(reply.status_code)

    async def until(check: object, timeout: float = 30) -> float:
        started = time.monotonic()
        while not await check():  # type: ignore[operator]
            assert time.monotonic() - started < timeout
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async with httpx.AsyncClient(base_url=own_stack.base_url, headers=headers, timeout=30) as http:
        loaders = [asyncio.create_task(load(http, "demo")) for _ in range(4)]
        await asyncio.sleep(1)
        good = MODELS.format(demo=own_stack.ports["demo"]) + HOT.format(
            demo=own_stack.ports["demo"]
        )
        own_stack.models_file.write_text(good)

        async def listed() -> bool:
            models = (await http.get("/models")).json()["data"]
            return any(m["id"] == "hot-alias" for m in models)

        async def answers() -> bool:
            body = {"model": "hot", "messages": [{"role": "user", "content": "new here"}]}
            reply = await http.post("/chat/completions", json=body)
            return reply.status_code == 200

        seconds_listed = await until(listed)
        seconds_answered = await until(answers)
        # A broken edit: refused by the router, which keeps serving the last good table.
        own_stack.models_file.write_text(good.replace("max_concurrency: 8", "max_concurency: 8"))
        log = own_stack.logs / "router.log"

        async def refused() -> bool:
            return any(
                "max_concurency: unknown field" in json.loads(line).get("error", "")
                for line in log.read_text().splitlines()
                if line.startswith("{")
            )

        await until(refused)
        still = await answers()
        loaded = len(outcomes)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*loaders)
    refusal = next(
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and "refused" in line
    )
    print(
        f"\nhot listed after {seconds_listed:.2f} s, answering after "
        f"{seconds_listed + seconds_answered:.2f} s; concurrent load: {len(outcomes)} requests, "
        f"statuses {sorted(set(outcomes))}\nrouter: {refusal['msg']}: {refusal['error']}"
    )
    assert still
    assert len(outcomes) > loaded  # traffic went on after the broken edit
    assert set(outcomes) == {200}
