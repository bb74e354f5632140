"""The one way a path named by the data is opened.

A JSONL line names its image; nothing about that name is trusted. ``read_data_file`` returns the
bytes only if the name is relative, stays inside the image folder once symlinks are resolved, and
names a regular file under the size limit, and it re-checks the file it actually opened: a file
swapped for a symlink between the check and the open is refused, not followed (``O_NOFOLLOW`` on
the last component, then the opened descriptor's own path and type). A FIFO is opened without
blocking and refused by type, so no input can hang a run, and a huge file is refused from its size
before a byte is read. Every refusal is a ``BadFile`` with a reason from ``lib.data.reasons``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from functools import lru_cache
from pathlib import Path

from lib.data.reasons import BadInput
from lib.settings import MAX_FILE_BYTES

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class BadFile(BadInput):
    """A data path that is not opened, or not read; ``reason`` says why."""


@lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def checked_path(root: str | os.PathLike, name: str) -> Path:
    """``root/name`` with symlinks resolved, or BadFile if the name could reach outside ``root``,
    loops, or names nothing. Decided from the name first: a lexical ``..`` out of the folder is
    refused before anything outside it is looked at."""
    if not name or not name.strip() or "\x00" in name:
        raise BadFile("unsafe_path", "empty name or NUL byte")
    if os.path.isabs(name) or name.startswith("~"):
        raise BadFile("unsafe_path", "absolute path")
    if os.path.normpath(name).split(os.sep)[0] == os.pardir:
        raise BadFile("unsafe_path", "escapes the image folder")
    real_root = _real_root(str(root))
    try:
        real = os.path.realpath(os.path.join(real_root, name), strict=True)
    except FileNotFoundError:
        raise BadFile("missing_file", str(Path(root) / name)) from None
    except NotADirectoryError:
        raise BadFile("missing_file", f"{Path(root) / name}: a path through a file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadFile("symlink_loop", str(Path(root) / name)) from None
        raise BadFile("unreadable", f"{Path(root) / name}: {e.strerror}") from None
    if os.path.commonpath((real, real_root)) != real_root:
        raise BadFile("unsafe_path", "a symlink leads out of the image folder")
    return Path(real)


def _opened_path(fd: int) -> str | None:
    """The path of what ``fd`` really is (Linux); None where the OS does not say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def read_data_file(root: str | os.PathLike, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of image ``name`` under ``root``, read through every check above."""
    path = checked_path(root, name)
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BadFile("missing_file", f"{path}: removed after it was checked") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: swapped in after the check
            raise BadFile("unsafe_path", f"{path} became a symlink after it was checked") from None
        raise BadFile("unreadable", f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadFile("not_regular_file", f"{path} is {_kind(st.st_mode)}")
        if st.st_size > max_bytes:
            raise BadFile("too_large", f"{st.st_size} bytes > {max_bytes}")
        opened = _opened_path(fd)
        if opened is not None and os.path.commonpath((opened, _real_root(str(root)))) != _real_root(
            str(root)
        ):
            raise BadFile("unsafe_path", f"{path} was swapped for a file outside the image folder")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise BadFile("unreadable", f"{path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew after fstat
        raise BadFile("too_large", f"more than {max_bytes} bytes")
    return data


def content_digest(data: bytes) -> str:
    """The digest validate records for an image's bytes: preprocess checks what it reads against it."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
