"""Append-only daily files, written atomically, de-duplicated by idempotency key.

Each data file ``NAME`` has a sidecar ``.NAME.keys.json`` holding the keys the
file contains and the SHA-256 of the data it describes. A batch is written
as: (1) the sidecar, atomically, listing the new keys as *pending* and the hash
of the data about to be written; (2) the data file, atomically (temp file,
fsync, rename). If the process dies between the two, the next writer sees the
hash mismatch and knows the pending keys never reached the file. An
``fcntl`` lock serialises writers on this machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator


def file_day(item_created_at: float | None, tz_name: str) -> str:
    """The day whose file an operation goes to: the day it was planned, in the project's
    time zone, so a retry after midnight lands in (and is de-duplicated by) the same file."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(tz_name)
    when = datetime.fromtimestamp(item_created_at, tz) if item_created_at else datetime.now(tz)
    return when.date().isoformat()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class KeyedFile:
    path: Path

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(f".{self.path.name}.keys.json")

    @property
    def lockfile(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lockfile, "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def _state(self) -> tuple[bytes, set[str]]:
        data = self.path.read_bytes() if self.path.exists() else b""
        if not self.sidecar.exists():
            return data, set()
        side = json.loads(self.sidecar.read_text())
        keys = set(side["keys"])
        if side["sha256"] != hashlib.sha256(data).hexdigest():
            keys -= set(side.get("pending", []))   # the last data write never landed
        return data, keys

    def written_keys(self) -> set[str]:
        with self.locked():
            return self._state()[1]

    def append(self, entries: list[tuple[str, bytes]],
               header: Callable[[], bytes] | None = None) -> dict[str, bool]:
        """Append (key, chunk) entries not yet in the file. Returns key -> newly written."""
        with self.locked():
            data, keys = self._state()
            result: dict[str, bool] = {}
            new_chunks: list[bytes] = []
            new_keys: list[str] = []
            for key, chunk in entries:
                if key in keys or key in result:
                    result.setdefault(key, False)
                    continue
                result[key] = True
                new_chunks.append(chunk)
                new_keys.append(key)
            if not new_keys:
                return result
            if not data and header is not None:
                data = header()
            new_data = data + b"".join(new_chunks)
            side = {"sha256": hashlib.sha256(new_data).hexdigest(),
                    "keys": sorted(keys | set(new_keys)), "pending": new_keys}
            atomic_write(self.sidecar, json.dumps(side).encode())
            atomic_write(self.path, new_data)
            return result
