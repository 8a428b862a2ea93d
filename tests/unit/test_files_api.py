"""/v1/files in-process (gateway/files_api.py): the gateway's app over a stand-in for quota's
key check, so that roles, ownership, the size limit and malformed forms are each one request."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from tests.support import TEST_SEALER
from tiller.common.errors import AuthenticationFailed
from tiller.gateway.http_api import create_app
from tiller.gateway.inference import Inference
from tiller.gateway.settings import GatewaySettings
from tiller.protos.quota.v1 import quota_pb2

LIMIT = 1000
KEYS = {"tk-ann": "member", "tk-bob": "member", "tk-root": "admin", "tk-eve": "viewer"}


class Keys:
    """What the gateway asks of quota here: who a key is."""

    def __init__(self, tmp_path: Path, limit: int = LIMIT) -> None:
        self.settings = GatewaySettings(files_dir=str(tmp_path / "files"), files_max_bytes=limit)
        self.up = SimpleNamespace(sealer=TEST_SEALER)

    async def authenticate(self, api_key: str) -> quota_pb2.Principal:
        if api_key not in KEYS:
            raise AuthenticationFailed()
        return quota_pb2.Principal(key_id=f"id-{api_key[3:]}", role=KEYS[api_key])


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(cast(Inference, Keys(tmp_path)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway/v1") as client:
        yield client


def as_(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def upload(
    http: httpx.AsyncClient, key: str, data: bytes = b"{}\n", **form: str
) -> httpx.Response:
    files = {"file": ("in.jsonl", data, "application/jsonl")}
    return await http.post(
        "/files", headers=as_(key), files=files, data=form or {"purpose": "batch"}
    )


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_a_file_is_its_owners_and_the_admins(http: httpx.AsyncClient) -> None:
    made = await upload(http, "tk-ann", b'{"a": 1}\n')
    assert made.status_code == 200, made.text
    file_id = made.json()["id"]
    for key in ("tk-ann", "tk-root"):
        assert (await http.get(f"/files/{file_id}", headers=as_(key))).json()["id"] == file_id
        content = await http.get(f"/files/{file_id}/content", headers=as_(key))
        assert content.content == b'{"a": 1}\n'
        assert content.headers["content-type"] == "application/jsonl"
    for path in (f"/files/{file_id}", f"/files/{file_id}/content"):
        assert error_of(await http.get(path, headers=as_("tk-bob")), 404)["param"] == "id"
    assert (await http.delete(f"/files/{file_id}", headers=as_("tk-bob"))).status_code == 404
    listed = {k: (await http.get("/files", headers=as_(k))).json() for k in ("tk-bob", "tk-root")}
    assert listed["tk-bob"] == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert [f["id"] for f in listed["tk-root"]["data"]] == [file_id]
    deleted = await http.delete(f"/files/{file_id}", headers=as_("tk-root"))
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}


async def test_a_viewer_reads_but_neither_uploads_nor_deletes(http: httpx.AsyncClient) -> None:
    file_id = (await upload(http, "tk-ann")).json()["id"]
    assert error_of(await upload(http, "tk-eve"), 403)["code"] == "permission_denied"
    assert (await http.delete(f"/files/{file_id}", headers=as_("tk-eve"))).status_code == 403
    assert (await http.get("/files", headers=as_("tk-eve"))).json()["data"] == []
    assert (await http.get(f"/files/{file_id}", headers=as_("tk-eve"))).status_code == 404
    for key in ("tk-nobody", None):
        headers = as_(key) if key else {}
        assert (await http.get("/files", headers=headers)).status_code == 401


async def test_sizes_forms_and_queries_that_are_refused(http: httpx.AsyncClient) -> None:
    assert (await upload(http, "tk-ann", b"x" * LIMIT)).status_code == 200
    too_big = error_of(await upload(http, "tk-ann", b"x" * (LIMIT + 1)), 413)
    assert too_big["code"] == "request_too_large" and str(LIMIT) in too_big["message"]
    # Past the limit and the form's overhead, the body is not read to its end: refused for
    # the length it declares, or for what came of it so far.
    assert (await upload(http, "tk-ann", b"x" * (LIMIT + 70_000))).status_code == 413
    form = httpx.Request("POST", "/", files={"file": ("a", b"x" * 200_000)}, data={"purpose": "b"})
    sent: list[int] = []

    async def chunked() -> AsyncIterator[bytes]:
        body = form.read()
        for at in range(0, len(body), 4096):
            sent.append(at)
            yield body[at : at + 4096]

    headers = as_("tk-ann") | {"content-type": form.headers["content-type"]}
    assert error_of(await http.post("/files", headers=headers, content=chunked()), 413)
    assert LIMIT + 64 * 1024 < sent[-1] + 4096 < 100_000  # of 200_000
    assert error_of(await upload(http, "tk-ann", purpose="batch_output"), 400)["param"] == "purpose"
    assert error_of(await upload(http, "tk-ann", note="no purpose"), 400)["param"] == "purpose"
    no_file = await http.post("/files", headers=as_("tk-ann"), files={"purpose": (None, "batch")})
    assert error_of(no_file, 400)["param"] == "file"
    as_json = await http.post("/files", headers=as_("tk-ann"), json={"purpose": "batch"})
    assert error_of(as_json, 415)["param"] == "Content-Type"
    broken = await http.post(
        "/files",
        headers=as_("tk-ann") | {"content-type": "multipart/form-data; boundary=x"},
        content=b"--x\r\nno headers at all",
    )
    assert error_of(broken, 400)["type"] == "invalid_request_error"
    for query, param in (("limit=0", "limit"), ("limit=ten", "limit"), ("order=up", "order")):
        assert error_of(await http.get(f"/files?{query}", headers=as_("tk-ann")), 400)["param"] == (
            param
        )
    unknown = await http.get("/files?after=file-" + "0" * 32, headers=as_("tk-ann"))
    assert error_of(unknown, 404)["param"] == "after"
    assert (await http.get("/files/..%2F..%2Fetc", headers=as_("tk-root"))).status_code == 404


async def test_an_upload_is_never_on_disk_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette spools a form's file past 1 MiB to a temporary file; here it stays in memory."""
    spooled: list[object] = []

    def to_disk(*args: object, **kwargs: object) -> None:
        spooled.append(args)
        raise OSError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", to_disk)
    app = create_app(cast(Inference, Keys(tmp_path, limit=4 * 1024 * 1024)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway/v1") as http:
        data = b'{"custom_id": "kim"}\n' * 150_000  # 3.2 MB
        made = await upload(http, "tk-ann", data)
        assert made.status_code == 200, made.text
        assert (
            await http.get(f"/files/{made.json()['id']}/content", headers=as_("tk-ann"))
        ).content == data
    assert spooled == []
