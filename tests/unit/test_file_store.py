"""The gateway's file store (gateway/file_store.py) on a temporary directory: what goes in comes
out, nothing readable lies on disk, ids are checked before they name a path, a write is whole
or absent, and listing pages in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import TEST_SEALER
from tiller.common.errors import InvalidRequest, NotFound
from tiller.common.payload_codec import PayloadKeyError
from tiller.gateway.file_store import FileStore

LINE = b'{"custom_id": "kim-1", "method": "POST", "url": "/v1/chat/completions"}\n'


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "files", TEST_SEALER)


async def test_a_file_comes_back_as_it_went_in(store: FileStore) -> None:
    stored = await store.put("key-a", "kim-lee.jsonl", "batch", LINE * 3)
    assert stored.id.startswith("file-") and len(stored.id) == 37
    assert (stored.owner, stored.filename, stored.purpose) == ("key-a", "kim-lee.jsonl", "batch")
    assert stored.bytes == len(LINE * 3)
    assert await store.get(stored.id) == stored
    assert await store.content(stored.id) == LINE * 3
    assert stored.to_openai() == {
        "id": stored.id,
        "object": "file",
        "bytes": len(LINE * 3),
        "created_at": stored.created_at,
        "filename": "kim-lee.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    await store.delete(stored.id)
    for read in (store.get, store.content, store.delete):
        with pytest.raises(NotFound):
            await read(stored.id)


async def test_nothing_readable_is_on_disk(store: FileStore) -> None:
    stored = await store.put("key-secret-owner", "kim-lee-salaries.jsonl", "batch", LINE)
    names = sorted(p.name for p in store.root.iterdir())
    assert names == [f"{stored.id}.data", f"{stored.id}.meta"]  # the id, never the filename
    raw = b"".join(p.read_bytes() for p in store.root.iterdir())
    for plain in (b"kim-1", b"custom_id", b"kim-lee", b"salaries", b"key-secret-owner", b"batch"):
        assert plain not in raw
    assert (os.stat(store.root).st_mode & 0o777) == 0o700
    for path in store.root.iterdir():
        assert (os.stat(path).st_mode & 0o777) == 0o600


async def test_a_blob_moved_to_another_id_or_part_does_not_open(store: FileStore) -> None:
    first = await store.put("a", "one.jsonl", "batch", b"one")
    second = await store.put("a", "two.jsonl", "batch", b"two")
    data, meta = store.root / f"{first.id}.data", store.root / f"{first.id}.meta"
    os.replace(store.root / f"{second.id}.data", data)
    with pytest.raises(PayloadKeyError):
        await store.content(first.id)
    (store.root / f"{second.id}.meta").write_bytes(meta.read_bytes())
    with pytest.raises(PayloadKeyError):
        await store.get(second.id)
    assert await store.list(None, None, 10, None, "asc") == ([first], False)  # skipped


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "file-../../x",
        "file-" + "A" * 32,
        "file-" + "0" * 31,
        "file-" + "0" * 33,
        "file-" + "0" * 32 + "\n",
        "file-" + "0" * 32 + ".meta",
        "",
    ],
)
async def test_ids_are_checked_before_they_reach_the_disk(
    store: FileStore, tmp_path: Path, bad: str
) -> None:
    (tmp_path / "etc").mkdir()
    for call in (store.get, store.content, store.delete):
        with pytest.raises(NotFound) as error:
            await call(bad)
        assert error.value.http_status == 404 and error.value.param == "id"
    assert not store.root.exists()  # nothing was read or made


async def test_a_write_leaves_no_temporary_files(store: FileStore) -> None:
    await store.put("a", "x.jsonl", "batch", LINE)
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


async def test_a_write_that_fails_leaves_nothing(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        await store.put("a", "x.jsonl", "batch", LINE)
    assert list(store.root.iterdir()) == []
    assert await store.list(None, None, 10, None, "asc") == ([], False)


async def test_a_file_written_again_under_its_id_replaces_it(store: FileStore) -> None:
    first = await store.put("a", "out.jsonl", "batch_output", b"one", file_id="file-" + "e" * 32)
    again = await store.put("a", "out.jsonl", "batch_output", b"two!", file_id=first.id)
    assert again.id == first.id and again.bytes == 4
    assert await store.content(first.id) == b"two!"
    assert len(list(store.root.iterdir())) == 2
    with pytest.raises(ValueError, match="not a file id"):
        await store.put("a", "x", "batch", b"", file_id="../x")


async def test_listing_pages_in_order_by_owner_and_purpose(store: FileStore) -> None:
    assert await store.list(None, None, 10, None, "desc") == ([], False)  # no directory yet
    made = [
        await store.put(owner, f"{n}.jsonl", purpose, b"x")
        for n, (owner, purpose) in enumerate(
            [("a", "batch"), ("b", "batch"), ("a", "batch"), ("a", "user_data"), ("a", "batch")]
        )
    ]
    a_batch = [made[0], made[2], made[4]]
    assert await store.list("a", "batch", 10, None, "asc") == (a_batch, False)
    assert await store.list("a", "batch", 10, None, "desc") == (a_batch[::-1], False)
    assert await store.list(None, None, 10_000, None, "asc") == (made, False)
    assert await store.list("a", None, 10, None, "asc") == ([made[i] for i in (0, 2, 3, 4)], False)
    # Page by page, each after the last id of the one before.
    assert await store.list("a", "batch", 2, None, "asc") == (a_batch[:2], True)
    assert await store.list("a", "batch", 2, made[2].id, "asc") == (a_batch[2:], False)
    assert await store.list(None, None, 2, made[2].id, "desc") == ([made[1], made[0]], False)
    assert await store.list(None, None, 1, made[1].id, "desc") == ([made[0]], False)
    with pytest.raises(NotFound):  # another owner's id is no cursor of this owner's
        await store.list("a", None, 10, made[1].id, "asc")
    for limit, order, param in ((0, "asc", "limit"), (10_001, "asc", "limit"), (1, "up", "order")):
        with pytest.raises(InvalidRequest) as error:
            await store.list(None, None, limit, None, order)
        assert error.value.param == param
