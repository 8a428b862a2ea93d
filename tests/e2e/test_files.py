"""/v1/files through the whole stack with the official openai SDK: upload, retrieve, list,
content and delete as a batch's caller does them; another key sees none of it; what lies on the
gateway's disk is sealed."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import Stack

LINES = b"".join(
    b'{"custom_id": "req-%d", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "demo", "messages": [{"role": "user", "content": "Hello Kim"}]}}\n' % n
    for n in range(3)
)


def member_key(stack: Stack, name: str) -> str:
    created = httpx.post(
        f"{stack.base_url[:-3]}/admin/keys",
        json={"name": name, "role": "member"},
        headers={"authorization": f"Bearer {stack.admin_key}"},
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def test_a_batch_input_file_through_the_sdk(stack: Stack) -> None:
    owner = openai.OpenAI(base_url=stack.base_url, api_key=member_key(stack, "files-owner"))
    other = openai.OpenAI(base_url=stack.base_url, api_key=member_key(stack, "files-other"))
    admin = openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key)
    with owner, other, admin:
        made = owner.files.create(file=("in.jsonl", LINES, "application/jsonl"), purpose="batch")
        assert made.id.startswith("file-") and made.object == "file"
        assert (made.filename, made.purpose, made.bytes, made.status) == (
            "in.jsonl",
            "batch",
            len(LINES),
            "processed",
        )
        assert owner.files.retrieve(made.id) == made
        assert made.id in [f.id for f in owner.files.list(purpose="batch")]
        assert made.id not in [f.id for f in owner.files.list(purpose="user_data")]
        assert owner.files.content(made.id).read() == LINES

        # Another key is told it does not exist; an admin's sees it.
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(made.id)
        with pytest.raises(openai.NotFoundError):
            other.files.delete(made.id)
        assert made.id not in [f.id for f in other.files.list()]
        assert admin.files.retrieve(made.id).id == made.id

        # On the gateway's disk: the id, sealed; neither the lines nor the filename.
        stored = sorted((stack.data_dir / "files").glob(f"{made.id}.*"))
        assert [p.name for p in stored] == [f"{made.id}.data", f"{made.id}.meta"]
        for path in stored:
            assert b"Hello Kim" not in path.read_bytes()
            assert b"in.jsonl" not in path.read_bytes()

        deleted = owner.files.delete(made.id)
        assert (deleted.id, deleted.deleted) == (made.id, True)
        with pytest.raises(openai.NotFoundError):
            owner.files.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            owner.files.content(made.id)
        assert not list((stack.data_dir / "files").glob(f"{made.id}.*"))


def test_pages_of_files_through_the_sdk(stack: Stack) -> None:
    with openai.OpenAI(base_url=stack.base_url, api_key=member_key(stack, "files-pages")) as sdk:
        made = [
            sdk.files.create(file=(f"{n}.jsonl", b"{}\n", "application/jsonl"), purpose="batch")
            for n in range(3)
        ]
        first = sdk.files.list(limit=2, order="asc")
        assert [f.id for f in first.data] == [made[0].id, made[1].id] and first.has_more
        # The SDK follows the pages by itself (`after` = the last id of each).
        assert [f.id for f in sdk.files.list(limit=2, order="asc")] == [f.id for f in made]
        assert [f.id for f in sdk.files.list(order="desc")] == [f.id for f in made[::-1]]


def test_uploads_that_are_refused(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        no_purpose = http.post("/files", files={"file": ("in.jsonl", b"{}\n")})
        no_file = http.post("/files", files={"purpose": (None, "batch")})
        no_key = http.get("/files", headers={"authorization": ""})
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert no_key.status_code == 401
    with (
        openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as sdk,
        pytest.raises(openai.BadRequestError) as error,
    ):
        sdk.files.create(file=("in.jsonl", b"{}\n"), purpose="batch_output")  # type: ignore[arg-type]
    assert error.value.param == "purpose"
