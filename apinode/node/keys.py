"""Admin API keys: made, listed and deleted from the command line or the admin API.

Only a SHA-256 digest of each key is stored (`<data-dir>/config/admin-keys.json`): the secret
is shown once, when it is made. Keys are high-entropy random strings, so a plain digest is
enough (no salt or slow hash is needed against guessing). A check compares the digest of the
candidate with every stored digest in constant time.

Concurrency: the node and `apinode admin-key-*` commands may change the file at the same time.
Every change is a read-modify-write under an exclusive `flock` of a lock file next to it, and
is written atomically. The node re-reads the file when it changed on disk, so a key made from
the command line while the node runs works at once. All calls are synchronous and short.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..packaging.filelock import locked
from .errors import BadRequest, NotFound
from .jsonfile import DataDirError, read_json, write_json

_PUBLIC_FIELDS = ("id", "label", "description", "createdBy", "createdOn", "expiry")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _parse_expiry(value: object) -> datetime.datetime | None:
    """An expiry as given to `create`: null, or an ISO 8601 date-time (UTC when no offset)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    raise BadRequest(f'expiry: expected null or an ISO 8601 date-time such as "2030-01-31T00:00:00Z", got {value!r}')


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _record_problem(record: object) -> str | None:
    """What is wrong with a stored key record, if anything."""
    if not isinstance(record, dict) or set(record) != {*_PUBLIC_FIELDS, "hash"}:
        return f"expected an object with fields {', '.join(sorted({*_PUBLIC_FIELDS, 'hash'}))}"
    if not isinstance(record["id"], str) or not isinstance(record["createdOn"], str):
        return "id and createdOn: expected strings"
    if not isinstance(record["hash"], str) or not _DIGEST.fullmatch(record["hash"]):
        return "hash: expected a SHA-256 digest in hex"
    if any(record[field] is not None and not isinstance(record[field], str) for field in _PUBLIC_FIELDS):
        return "label, description, createdBy and expiry: expected strings or null"
    if record["expiry"] is not None:
        try:
            _parse_expiry(record["expiry"])
        except BadRequest as error:
            return error.message
    return None


class AdminKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._records: list[dict[str, Any]] = []
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) last read

    def create(
        self,
        label: str | None = None,
        description: str | None = None,
        created_by: str | None = None,
        expiry: str | None = None,
    ) -> dict[str, Any]:
        """Make a key; its public fields and, this once, the secret itself under "key"."""
        expires = _parse_expiry(expiry)
        # A readable prefix, and never a leading "-" that a command line would take for an option.
        key = "apinode-" + secrets.token_urlsafe(32)
        record = {
            "id": secrets.token_hex(6),
            "label": label,
            "description": description,
            "createdBy": created_by,
            "createdOn": _now().isoformat(timespec="seconds"),
            "expiry": None if expires is None else expires.isoformat(timespec="seconds"),
            "hash": _digest(key),
        }
        with self._changing() as records:
            records.append(record)
        return {**self._public(record), "key": key}

    def entries(self) -> list[dict[str, Any]]:
        """Every key's public fields (never its secret nor its digest)."""
        return [self._public(record) for record in self._current()]

    def delete(self, key_or_id: str) -> dict[str, Any]:
        """Delete the key given by its secret or its id; its public fields."""
        digest = _digest(key_or_id)
        with self._changing() as records:
            for index, record in enumerate(records):
                if record["id"] == key_or_id or hmac.compare_digest(record["hash"], digest):
                    return self._public(records.pop(index))
        raise NotFound("no such admin key (give the key itself or its id, as `apinode admin-keys-list` shows it)")

    def check(self, candidate: str | None) -> bool:
        """Whether `candidate` is a valid, unexpired key; compares against every key."""
        if not candidate:
            return False
        digest = _digest(candidate)
        now = _now()
        valid = False
        for record in self._current():
            matches = hmac.compare_digest(record["hash"], digest)
            expiry = _parse_expiry(record["expiry"])
            valid |= matches and (expiry is None or expiry > now)
        return valid

    def problem(self) -> str | None:
        """Why the key file cannot be used (then every admin call is refused), or None."""
        try:
            self._current()
        except DataDirError as error:
            return str(error)
        return None

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {field: record[field] for field in _PUBLIC_FIELDS}

    def _current(self) -> list[dict[str, Any]]:
        """The records, re-read only when the file changed since the last read."""
        try:
            info = os.stat(self.path)
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._records = self._read()
            self._seen = seen
        return self._records

    def _read(self) -> list[dict[str, Any]]:
        """The records on disk, each checked: a damaged file is a DataDirError naming it."""
        content = read_json(self.path, {"keys": []})
        if not isinstance(content, dict) or not isinstance(content.get("keys"), list):
            raise DataDirError(f'{self.path}: expected {{"keys": [...]}}; repair or remove the file')
        keys: list[dict[str, Any]] = content["keys"]
        for index, record in enumerate(keys):
            problem = _record_problem(record)
            if problem:
                raise DataDirError(f"{self.path}: keys[{index}]: {problem}; repair or remove the file")
        return keys

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[dict[str, Any]]]:
        """The records to change in place, read and written back under the file lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self._lock_path):
            records = self._read()
            yield records
            write_json(self.path, {"keys": records})
        self._seen = None
