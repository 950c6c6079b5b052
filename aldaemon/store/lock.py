"""The state directory and its lock: one daemon per directory, even across `kill -9`.

STATE_DIR/                 mode 0700 (it holds everything we know about the projects)
  aldaemon.lock            flock()ed by the one daemon that owns the directory
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from aldaemon.errors import StateError, StateLockedError

LOCK_FILENAME = "aldaemon.lock"


def make_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {state_dir}: {exc.strerror or exc}; "
            "point [state] dir at a directory the daemon's user can write"
        ) from exc
    if not state_dir.is_dir():
        raise StateError(f"the state directory {state_dir} exists but is not a directory")


def _read_holder_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def acquire_lock(lock_path: Path) -> int:
    """Take the exclusive lock on the state dir and write our pid into the lock file.

    flock() is released by the kernel when the process dies, even on `kill -9`, so a stale
    file never blocks a restart. The file itself is never removed: unlinking a lock file
    races with the next opener.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open the lock file {lock_path}: {exc.strerror or exc}; "
            "the state directory must be writable by the daemon's user"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StateLockedError(
                f"another aldaemon (pid {_read_holder_pid(lock_path)}) holds {lock_path}; "
                "stop it first, or give this one its own [state] dir"
            ) from exc
        raise StateError(f"cannot lock {lock_path}: {exc.strerror or exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk (ENOSPC), a quota, an I/O error
        release_lock(fd)
        raise StateError(
            f"cannot write the lock file {lock_path}: {exc.strerror or exc}; "
            "free space on the state directory's file system"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else f"cannot write the lock file {lock_path}: {exc.strerror or exc}"
        ) from exc
    return fd


def release_lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
