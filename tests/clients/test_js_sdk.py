"""The official JavaScript SDK (`openai` from npm) against the whole stack: the scripts in
tests/clients/js run with `node`, as its users run them (the SDK reads OPENAI_BASE_URL and
OPENAI_API_KEY), and print what they got; the test checks each line. The project's
package-lock.json pins the SDK; `npm ci` installs it once into tests/clients/js/node_modules.
openai 7 needs Node 22; the project is on the 6.x line, which runs on Node 20 as CI has it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import Stack
from tiller.demo_engine.generation import embedding

PROJECT = Path(__file__).resolve().parent / "js"
QUESTION = "What is the weather in Seoul?"
TEXT_EVENTS = (
    "response.created response.in_progress response.output_item.added "
    "response.content_part.added response.output_text.delta response.output_text.done "
    "response.content_part.done response.output_item.done response.completed"
)
EXPECTED = {
    "chat.mjs": [
        "chat: You said: Hello from Node",
        "usage: 3 + 5",
        f"tool asked: {json.dumps([QUESTION])}",
        "tool answer: The tool said: sunny",
    ],
    "stream.mjs": [
        "pieces: …",  # how the text is cut is the stream's timing; checked below
        "stream: You said: Stream from Node",
        "usage: 5",
        "helper: You said: helper too",
    ],
    "embeddings.mjs": [
        "embeddings: 2 of 8",
        f"first: {json.dumps(embedding('first text'))}",
        "usage: 3",
    ],
    "responses.mjs": [
        "response: You said: Hello Responses",
        f"events: {TEXT_EVENTS}",
        "streamed: You said: stream it",
        f"function call: weather {json.dumps({'city': QUESTION})}",
        "answer: The tool said: sunny",
    ],
}


@pytest.fixture(scope="module")
def node_project() -> Path:
    """The project with its locked dependencies installed (npm ci, skipped when node_modules
    already holds exactly the locked packages)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not on PATH: the JavaScript SDK's tests need them")
    locked = json.loads((PROJECT / "package-lock.json").read_text())["packages"]
    installed = PROJECT / "node_modules" / ".package-lock.json"
    wanted = {name: entry["version"] for name, entry in locked.items() if name}
    if (
        not installed.exists()
        or {
            name: entry["version"]
            for name, entry in json.loads(installed.read_text())["packages"].items()
        }
        != wanted
    ):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=PROJECT, check=True, timeout=300
        )
    return PROJECT


@pytest.mark.parametrize("script", list(EXPECTED))
def test_the_js_sdk(node_project: Path, stack: Stack, script: str) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": stack.base_url, "OPENAI_API_KEY": stack.admin_key}
    ran = subprocess.run(
        ["node", script], cwd=node_project, env=env, capture_output=True, text=True, timeout=60
    )
    print(f"\n$ node {script}\n{ran.stdout}{ran.stderr}", end="")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    if script == "embeddings.mjs":  # numbers as JavaScript prints them: compare as numbers
        first = json.loads(lines[1].removeprefix("first: "))
        assert first == pytest.approx(embedding("first text"), abs=1e-6)
        lines[1] = EXPECTED[script][1]
    if script == "stream.mjs":
        pieces = json.loads(lines[0].removeprefix("pieces: "))
        assert "".join(pieces) == "You said: Stream from Node"
        lines[0] = EXPECTED[script][0]
    assert lines == EXPECTED[script]
