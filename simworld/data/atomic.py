"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry to disk so that a rename inside it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (for files written by a library that does not fsync)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temp_path_for(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A hidden temp name next to ``path``; ``keep_suffix`` keeps the extension last.

    Keeping the extension matters for writers that infer the format from the name (video
    containers); the process id keeps concurrent writers apart.
    """
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success fsync it and rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left untouched.

    Args:
        path: The final file name.
        keep_suffix: Put the real extension at the end of the temp name.
    """
    path = Path(path)
    tmp = temp_path_for(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
