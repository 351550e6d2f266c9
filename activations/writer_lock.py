"""One writer per output file: an exclusive ``flock`` beside it, held while the file is written."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``.OUT.lock`` beside ``OUT``, released on ``release()``
    or when the process dies (the kernel drops it, so a killed writer never leaves a stale lock). The
    lock file itself stays: unlinking it would let a third process lock a fresh inode while a second
    still holds the old one."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(f".{out.name}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FileExistsError(f"{out} is being written by another process (pid {holder}); wait for it to "
                                  "finish, or stop it and rerun to resume its partial file") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(str(os.getpid()))
        self._handle.flush()

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
