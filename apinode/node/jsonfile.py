"""Small JSON files of the data directory, written so that a crash never leaves half a file.

A write goes to a temporary file in the same directory, is flushed to disk, then renamed over
the target (`os.replace` is atomic on POSIX): a reader sees the old content or the new one. The
directory is flushed after the rename, so that the new name survives a power cut too.

Reading is the other half: whatever is on disk may be damaged (a full disk, a hand edit), so a
file that cannot be read or decoded is a DataDirError naming it, never a traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson


class DataDirError(Exception):
    """A file of the data directory that cannot be used: the operator has to repair it (guessing
    would silently lose state); the message names the file."""


def read_json(path: Path, default: Any = None) -> Any:
    """The decoded content of `path`, or `default` when there is no such file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as error:
        raise DataDirError(f"{path}: cannot read it ({error.strerror}); repair or remove it") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise DataDirError(f"{path}: not valid JSON ({error}); repair or remove the file") from None


def write_json(path: Path, value: Any) -> None:
    """Replace `path` with `value` as indented JSON, atomically.

    The file is readable by the node's user only (mkstemp's mode 0600): the data directory holds
    key digests and is nobody else's business.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries to disk: what makes a rename into it durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
