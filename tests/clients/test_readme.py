"""README's SDK examples run as written against the stack, and print what their comments say."""

from __future__ import annotations

import contextlib
import io
import re

import openai

from tests.support import ROOT, Stack


def test_the_readmes_sdk_examples_print_what_they_say(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it with the OpenAI SDK", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 3
    code = "\n".join(blocks).replace("http://127.0.0.1:8080/v1", stack.base_url)
    code = code.replace('api_key="tk-..."', f"api_key={stack.admin_key!r}")
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    for value in namespace.values():  # the README's client, closed as a program's exit would
        if isinstance(value, openai.OpenAI):
            value.close()
    said = re.findall(r"print\(.*\)\s+# (.+)", code)
    assert said, "README's prints say what they print"
    for expected in said:
        assert expected in printed.getvalue(), (expected, printed.getvalue())
