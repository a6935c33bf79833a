"""One run per output folder: a command that writes a folder holds a lock on it for the whole run.

The lock is a file beside the folder, not inside it (``runs/.baseline.crossmodal.lock`` for
``--out runs/baseline``), since a run's staged outputs are renamed into the folder; it is an OS
lock (:mod:`filelock`), released when its process ends, even killed. A second run on the same
folder does not wait for it: it refuses with :class:`~crossmodal.errors.InputError` (exit 2),
naming the run that holds the folder (its command, process id and start time, read from
``.NAME.crossmodal-run.json`` beside the lock, written whole once the lock is held; a run that
arrives in the instant before it is written, or after it is removed, looks again for up to 2 s).
So a folder always ends holding exactly one run's files.

The lock file itself stays (0 bytes): deleting it on release would let a process that opened
it just before the delete hold a lock on a file nobody else sees. When the lock had to create
folders and the run wrote nothing beside it, those folders are removed again. ``fetch``, which
adds files to a folder it does not own (``--dest .``), keeps its lock in the user's cache
(:func:`lock_dir`, named by the folder's path), so nothing appears beside or in that folder.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crossmodal.errors import InputError


def lock_dir() -> Path:
    """Where central locks live: ``$CROSSMODAL_CACHE/locks``, else ``$XDG_CACHE_HOME/crossmodal/locks``
    (``~/.cache/crossmodal/locks``)."""
    if os.environ.get("CROSSMODAL_CACHE"):
        return Path(os.environ["CROSSMODAL_CACHE"]).expanduser() / "locks"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crossmodal" / "locks"


def lock_paths(folder: str | os.PathLike, central: bool = False) -> tuple[Path, Path]:
    """(the lock file, the holder's description) beside ``folder``; ``central``: in :func:`lock_dir`,
    named by the folder's path, for a command that adds files to a folder it does not own (``fetch
    --dest .``), which must leave no file beside or in it."""
    folder = Path(os.path.abspath(folder))
    if central:
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:24]
        return lock_dir() / f"{key}.lock", lock_dir() / f"{key}.json"
    return (folder.with_name(f".{folder.name}.crossmodal.lock"),
            folder.with_name(f".{folder.name}.crossmodal-run.json"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):  # someone else's process, or a pid we cannot ask about
        return True
    return True


def _holder(info: Path) -> str | None:
    """The run described in ``info``, or None while there is no complete description of a live
    process (a killed run leaves its description behind; its successor overwrites it)."""
    try:
        data = json.loads(info.read_text())
        if not _alive(int(data["pid"])):
            return None
        return f"`{data['command']}` (pid {data['pid']}, started {data['started_utc']} UTC)"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _locks_the_file_at(lock, path: Path) -> bool:
    """Whether the file ``lock`` holds is still the one at ``path``: a finishing run that made the
    folders for its lock removes the lock file again, and a run that locked it just before then
    must lock the new one instead. True where filelock does not tell its descriptor."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True
    try:
        held, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


_SETTLE_S = 2.0  # how long a refused run waits for the holder's description (or its release)


def _acquire_or_name_holder(lock, info: Path, folder: Path) -> None:
    """Take ``lock`` at once, or raise naming its holder.

    The holder writes its description just after taking the lock and removes it just before
    releasing it; a run that arrives in either gap finds the lock held and no description. It then
    tries again for up to :data:`_SETTLE_S`: the description appears, or the lock comes free. A run
    that made the folders for its lock removes the file (and folders) as it finishes; a lock taken on
    the removed file is let go and taken again on the file now at the path."""
    from filelock import Timeout

    deadline = time.monotonic() + _SETTLE_S
    while True:
        try:
            Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
            if _locks_the_file_at(lock, Path(lock.lock_file)):
                return
            lock.release()  # a deleted file: lock the one at the path now
            if time.monotonic() >= deadline:
                raise InputError("another run keeps replacing this folder's lock file; try again", folder)
        except FileNotFoundError:  # a finishing run removed the folders it made between our mkdir and open
            if time.monotonic() >= deadline:
                raise
        except Timeout:
            holder = _holder(info)
            if holder is not None or time.monotonic() >= deadline:
                raise InputError(f"another run is writing to this folder: {holder or 'another crossmodal run'}; "
                                 "wait for it to finish or choose another output folder", folder) from None
            time.sleep(0.05)


@contextmanager
def output_lock(folder: str | os.PathLike, command: str, *, central: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, or refuse (within :data:`_SETTLE_S`) naming the run that holds it."""
    from filelock import FileLock

    folder = Path(os.path.abspath(folder))
    lock_file, info = lock_paths(folder, central)
    created = [p for p in [lock_file.parent, *lock_file.parent.parents] if not p.exists()]
    lock = FileLock(str(lock_file))
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        _acquire_or_name_holder(lock, info, folder)
    except OSError:  # no folder can be made or locked here: no other run can write here either, and the
        yield        # command's own check names the problem (a file in the way, a read-only disk)
        return
    try:
        record = {"command": f"crossmodal {command}", "argv": list(sys.argv), "pid": os.getpid(),
                  "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        partial = info.with_name(info.name + f".{os.getpid()}.tmp")
        try:  # whole or not at all: a run refused meanwhile reads it
            partial.write_text(json.dumps(record))
            os.replace(partial, info)
        except OSError:  # the description is a courtesy; the lock is what counts
            pass
        finally:
            partial.unlink(missing_ok=True)
        yield
    finally:
        info.unlink(missing_ok=True)
        alone = bool(created) and not central and set(lock_file.parent.iterdir()) == {lock_file}
        if alone:  # the folders were made for the lock alone: remove the file while still holding it, so a
            lock_file.unlink(missing_ok=True)  # run that locks it after the release sees it is gone
        lock.release()
        if alone:
            for parent in created:
                try:
                    parent.rmdir()
                except OSError:
                    break
