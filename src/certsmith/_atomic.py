"""Replacing a file so that readers see the old content or the new, never half of either.

Used for everything certsmith writes that another program reads: keys and certificates
(the file store), systemd units and cron files (the schedule). Raises :class:`OSError`;
callers turn it into their own error with advice.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int = 0o644, *, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    The temporary file has ``mode`` from the start (a key is never readable by others, not
    even briefly) and is fsynced before the rename; on any failure it is removed and
    ``path`` keeps its old content. ``uid``/``gid`` (-1: unchanged) are set before the
    rename too, so the file never appears with the wrong owner.
    """
    tmp = path.parent / f".{path.name}.tmp-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)  # exact mode regardless of the umask (and after fchown, which may clear bits)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where the filesystem cannot."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
