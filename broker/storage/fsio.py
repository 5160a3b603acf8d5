"""Small filesystem helpers shared by the storage classes.

``atomic_write`` is the one way to replace a file's content: write a temporary
file, fsync it, rename it over the target, fsync the directory. A crash leaves
either the old or the new content, never a mix; a leftover temporary file is
recognised by its name (see ``paths``) and removed at open.

``SegmentFile`` is the open file object of a segment's ``.log``. A fetch keeps
a reference to it (in a ``FileRange``) until ``os.sendfile`` is done, so the
storage layer never closes one that may still be referenced: a segment that is
deleted is only dropped, and the file closes when its last reference goes.
Closing a possibly shared fd would let the kernel reuse its number for another
file while a sendfile is about to read "from" it.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from . import paths


class SegmentFile(io.FileIO):
    """A ``.log`` opened for reading and appending (O_APPEND); closed when unreferenced."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "a+b")

    def __del__(self) -> None:
        # Closing here (not in IOBase's finaliser) skips the ResourceWarning: dropping
        # the last reference is the intended way to close a segment that was deleted.
        try:
            self.close()
        except OSError:
            pass


def fsync_dir(directory: Path) -> None:
    """fsync a directory so the names created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file by name (flushes the file's dirty pages whatever fd wrote them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """os.write until every byte of ``data`` is written; raises OSError."""
    view = memoryview(data)
    total = len(view)
    done = 0
    while done < total:
        done += os.write(fd, view[done:])


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: write temp, fsync, rename, fsync the directory."""
    tmp = paths.temp_file(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def unlink_durably(path: Path) -> bool:
    """Remove ``path`` and fsync its directory; False if it did not exist."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def remove_files(files: list[Path]) -> None:
    """Unlink ``files`` (missing ones are fine), then fsync the directories they were in.

    For files already renamed out of the way (``.deleted``): may run on any
    thread, and may block for a while on large files. Raises OSError.
    """
    directories = []
    for path in files:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        if path.parent not in directories:
            directories.append(path.parent)
    for directory in directories:
        try:
            fsync_dir(directory)
        except FileNotFoundError:
            pass  # the partition was deleted meanwhile


def remove_tree(path: Path) -> None:
    """Remove a directory and everything in it (missing is fine)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


def rename_and_remove(directory: Path, doomed: Path) -> None:
    """Rename ``directory`` to ``doomed`` (durably), then remove it.

    After a crash the directory is either intact or recognisably doomed, never half gone.
    """
    os.replace(directory, doomed)
    fsync_dir(directory.parent)
    remove_tree(doomed)
