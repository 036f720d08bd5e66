"""Atomic file writes: a temporary file in the target's folder, renamed onto the target when complete."""
from __future__ import annotations

import errno
import os
import tempfile

TEMPORARY_PREFIX = ".pas-"  # temporaries are hidden files named .pas-*.tmp next to their target


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write, *, exclusive: bool = False) -> str:
    """write(temporary_path) fills a temporary file, which then takes the name `path` (folders made).

    Readers see the old file or the new one, never a part. exclusive=True never overwrites: the finished
    file is hard-linked to `path`, which fails with FileExistsError when the name is taken (by another
    process too), so a name is claimed atomically.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600; give a normal file's mode
        if exclusive:
            _link_exclusive(temporary, path)
            os.remove(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """Atomically write a text file (UTF-8)."""
    def fill(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    return atomic_write(path, fill)


def _link_exclusive(source: str, target: str) -> None:
    """Give the finished file `source` the name `target` unless that name exists (FileExistsError)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as error:  # a file system without hard links (some FAT / network mounts)
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # claim the name, then fill it
        os.replace(source, target)
