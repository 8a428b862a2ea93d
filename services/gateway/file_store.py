"""Files uploaded through /v1/files (a batch's input) or written by Tiller (its output), kept on
the gateway's local disk, sealed.

Each file is two files in one directory, named by its id alone (a filename can be personal
data):

    file-<32 hex>.data   its content
    file-<32 hex>.meta   its owner, filename, purpose, size and time of creation

both sealed with the payload keys (common/sealing.py) for a context naming the id and the part,
so a blob renamed, or swapped for another file's or for the other part, does not open. Each is
written to a temporary file in the same directory, fsynced and renamed into place, the content
first: a file exists once its metadata does, and a crash leaves it whole or absent (at worst an
orphaned temporary or content file nothing reads). Listing reads every metadata file, which is
fine for a small team's volume.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tiller.common.errors import InvalidRequest, NotFound
from tiller.common.payload_codec import PayloadKeyError, PayloadKeys
from tiller.common.sealing import Sealer

log = logging.getLogger(__name__)
FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
MAX_LIST = 10_000  # OpenAI's bound on a page of files
ORDERS = ("asc", "desc")
_DATA, _META = ".data", ".meta"
_TEMPORARY = ".tmp-"
_NS = 1_000_000_000


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner: str  # the key id that uploaded it (or whose batch wrote it)
    filename: str
    purpose: str
    bytes: int  # the size of its plain content
    created_at: int  # unix seconds

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(frozen=True)
class _Entry:
    stored: StoredFile
    created_ns: int  # orders files made within one second

    @property
    def order(self) -> tuple[int, str]:
        return self.created_ns, self.stored.id


class FileStore:
    def __init__(self, root: Path, sealer: Sealer) -> None:
        self.root = root
        # Each operation runs in a thread with a Sealer of its own: a Sealer's cache of derived
        # ciphers is not made to be shared between threads.
        self._keys: PayloadKeys = sealer.keys

    async def put(
        self, owner: str, filename: str, purpose: str, data: bytes, *, file_id: str | None = None
    ) -> StoredFile:
        """A new file; or, given `file_id` (Tiller's own writers: a retried step that must not
        leave a second file), the file of that id, written anew whether or not it exists."""
        if file_id is not None and not FILE_ID.match(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        created_ns = time.time_ns()
        stored = StoredFile(
            file_id or f"file-{uuid.uuid4().hex}",
            owner,
            filename,
            purpose,
            len(data),
            created_ns // _NS,
        )
        await asyncio.to_thread(self._write, _Entry(stored, created_ns), data)
        return stored

    async def get(self, file_id: str) -> StoredFile:
        _check(file_id)
        entry = await asyncio.to_thread(self._read_entry, file_id, Sealer(self._keys))
        return entry.stored

    async def content(self, file_id: str) -> bytes:
        _check(file_id)
        return await asyncio.to_thread(self._read_content, file_id)

    async def delete(self, file_id: str) -> None:
        _check(file_id)
        await asyncio.to_thread(self._delete, file_id)

    async def list(
        self, owner: str | None, purpose: str | None, limit: int, after: str | None, order: str
    ) -> tuple[list[StoredFile], bool]:
        """A page of files, oldest or newest first, and whether more follow. `owner` None: all
        owners'; `after`: the id of the last file of the page before."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidRequest(f"limit must be from 1 to {MAX_LIST}.", param="limit")
        if order not in ORDERS:
            raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
        entries = await asyncio.to_thread(self._scan)
        chosen = sorted(
            (
                e
                for e in entries
                if (owner is None or e.stored.owner == owner)
                and (purpose is None or e.stored.purpose == purpose)
            ),
            key=lambda e: e.order,
            reverse=order == "desc",
        )
        start = 0
        if after is not None:
            ids = [e.stored.id for e in chosen]
            if after not in ids:
                raise NotFound(f"No such File object: {after[:80]}", param="after")
            start = ids.index(after) + 1
        page = chosen[start : start + limit]
        return [e.stored for e in page], start + limit < len(chosen)

    # --- in a thread ---------------------------------------------------------------------------

    def _path(self, file_id: str, part: str) -> Path:
        return self.root / f"{file_id}{part}"

    def _write(self, entry: _Entry, data: bytes) -> None:
        sealer = Sealer(self._keys)
        file_id = entry.stored.id
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_whole(self._path(file_id, _DATA), sealer.seal(data, _context(file_id, _DATA)))
        meta = sealer.seal(_meta(entry), _context(file_id, _META))
        _write_whole(self._path(file_id, _META), meta)
        _sync_directory(self.root)

    def _read_entry(self, file_id: str, sealer: Sealer) -> _Entry:
        try:
            blob = self._path(file_id, _META).read_bytes()
        except FileNotFoundError:
            raise _not_found(file_id) from None
        meta = orjson.loads(sealer.open(blob, _context(file_id, _META)))
        stored = StoredFile(
            file_id,
            meta["owner"],
            meta["filename"],
            meta["purpose"],
            meta["bytes"],
            meta["created_ns"] // _NS,
        )
        return _Entry(stored, meta["created_ns"])

    def _read_content(self, file_id: str) -> bytes:
        if not self._path(file_id, _META).exists():  # deleted, or its upload never finished
            raise _not_found(file_id)
        try:
            blob = self._path(file_id, _DATA).read_bytes()
        except FileNotFoundError:
            raise _not_found(file_id) from None
        return Sealer(self._keys).open(blob, _context(file_id, _DATA))

    def _delete(self, file_id: str) -> None:
        try:
            self._path(file_id, _META).unlink()  # gone for every reader from here
        except FileNotFoundError:
            raise _not_found(file_id) from None
        self._path(file_id, _DATA).unlink(missing_ok=True)

    def _scan(self) -> builtins.list[_Entry]:
        sealer = Sealer(self._keys)
        entries = []
        try:
            paths = list(self.root.glob(f"file-*{_META}"))
        except FileNotFoundError:
            return []  # nothing uploaded yet
        for path in paths:
            file_id = path.name.removesuffix(_META)
            if not FILE_ID.match(file_id):
                continue
            try:
                entries.append(self._read_entry(file_id, sealer))
            except NotFound:
                continue  # deleted while we listed
            except (PayloadKeyError, orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("a stored file's metadata does not open", extra={"file_id": file_id})
        return entries


def _check(file_id: str) -> None:
    """Ids are checked before they name a path: nothing else reaches the disk."""
    if not FILE_ID.match(file_id):
        raise _not_found(file_id)


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:80]}", param="id")


def _context(file_id: str, part: str) -> bytes:
    return f"tiller file {file_id}{part}".encode()


def _meta(entry: _Entry) -> bytes:
    stored = entry.stored
    return orjson.dumps(
        {
            "owner": stored.owner,
            "filename": stored.filename,
            "purpose": stored.purpose,
            "bytes": stored.bytes,
            "created_ns": entry.created_ns,
        }
    )


def _write_whole(path: Path, blob: bytes) -> None:
    """`blob` at `path`, all of it or (after a crash) nothing: a temporary file in the same
    directory, on disk before it is renamed over the path."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY)
    replaced = False
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _sync_directory(directory: Path) -> None:
    """The renames themselves on disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
