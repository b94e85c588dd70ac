"""Writing results so that a killed or failed job leaves nothing that looks finished.

Every product of specscale (datasets, metrics, predictions, ceilings, the cube, figures, the
report, checkpoints, generated configs) is written to ``NAME.tmp-PID`` beside its target and
renamed onto it only when complete; ``os.replace`` is atomic on one file system, so a reader sees
the old file or the new one, never half of one.

One writer per output: :func:`writer_lock` holds an ``fcntl.flock`` on ``TARGET.lock`` beside the
target while a command writes it, so a second writer fails at once naming the first one's PID. The
kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a dead
holder's leftover lock file never blocks. :func:`remove_stale_temps` clears the ``NAME.tmp-PID``
files that killed writers leave behind.

A write that fails (disk full, I/O error, read-only file system) raises :class:`WriteFailed`, one
line naming the target and the errno, after the temporary file is removed. HDF5 outputs go
through :func:`atomic_hdf5` / :func:`hdf5_sink`: the library writes into a Python file object that
keeps the first error and drops every later write, so HDF5 never sees a failed write (after one,
closing or deallocating the file segfaults in HDF5 2.0) and closes the file cleanly before the
error is raised.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from specscale.core.config import ConfigError, to_jsonable

log = logging.getLogger(__name__)
TEMP_SUFFIX = re.compile(r"\.tmp-(\d+)$")
# flock errors of file systems without locks (Lustre mounted without -o flock, some NFS setups)
NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}


# errors of the place written to, not of the data: disk full, quota, I/O, read-only, file too large
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}


class OutputBusy(ValueError):
    """Another live process holds the writer lock of an output; the message names its PID."""


class WriteFailed(OSError):
    """Writing an output failed (disk full, I/O error, read-only file system); ``str()`` is one
    line naming the target and the errno. Nothing that looks finished was left."""

    def __str__(self) -> str:
        return self.strerror


def write_failed(path: str | Path, exc: OSError) -> WriteFailed:
    """The WriteFailed for ``exc`` raised while writing ``path``."""
    code = errno.errorcode.get(exc.errno, "?")
    reason = exc.strerror or os.strerror(exc.errno)
    return WriteFailed(exc.errno, f"cannot write {path}: {reason} ({code}, errno {exc.errno}); nothing was written")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed onto ``path``,
    on any error (or interrupt) it is removed and ``path`` is left as it was. A failure of the
    place written to (:data:`WRITE_ERRNOS`) becomes :class:`WriteFailed` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS and not isinstance(exc, WriteFailed):
            raise write_failed(path, exc) from None
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:  # e.g. the file system went read-only: say so, keep the first error
            log.warning("%s: could not remove the temporary file (%s)", tmp, exc)


class HDF5Sink:
    """A file object for h5py's fileobj driver that never fails: the first OSError of a write or
    truncate is kept in ``error``; from then on writes only move the position and truncates only
    set the size, as if they had worked (reads past the real end give zeros), so HDF5 sees a
    consistent file, carries on and closes it cleanly. ``check()`` raises the kept error."""

    def __init__(self, path: Path):
        # unbuffered: an error surfaces in the write that caused it, not in a later seek or read
        self.raw = open(path, "w+b", buffering=0)  # noqa: SIM115 (closed by close(), after HDF5 is done with it)
        self.error: OSError | None = None
        self.size = 0  # the file's size as HDF5 believes it, once writes are dropped

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.size = self.raw.seek(0, os.SEEK_END)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                while view:  # an unbuffered write may take only part (a nearly full disk)
                    view = view[self.raw.write(view) :]
            except OSError as exc:
                self._fail(exc)
        if view:  # dropped: move on as if written
            self.size = max(self.size, self.raw.seek(len(view), os.SEEK_CUR))
        return len(data)

    def truncate(self, size=None):
        size = self.raw.tell() if size is None else size
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as exc:
                self._fail(exc)
        self.size = size
        return size

    def flush(self) -> None:
        pass  # unbuffered

    def readinto(self, buf) -> int:
        n = self.raw.readinto(buf)
        if self.error is not None and n < len(buf):  # past the real end of a file with dropped writes
            memoryview(buf).cast("B")[n:] = bytes(len(buf) - n)
            self.raw.seek(len(buf) - n, os.SEEK_CUR)
            n = len(buf)
        return n

    def read(self, n=-1) -> bytes:
        if n is None or n < 0:
            return self.raw.read()
        buf = bytearray(n)
        return bytes(buf[: self.readinto(buf)])

    def seek(self, offset, whence=os.SEEK_SET) -> int:
        if whence == os.SEEK_END and self.error is not None:
            return self.raw.seek(max(self.size, self.raw.seek(0, os.SEEK_END)) + offset)
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def check(self) -> None:
        """Raise the first write error, if any."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        try:
            self.raw.close()
        except OSError as exc:
            self.error = self.error or exc


@contextmanager
def hdf5_sink(tmp: Path) -> Iterator[HDF5Sink]:
    """An :class:`HDF5Sink` on ``tmp`` for the block (open ``h5py.File(sink, "w")`` inside it and
    close that first); on leaving, the first write error is raised, also in place of an error the
    block raised after it (HDF5's or the writer's reaction to the failed write). Call
    ``sink.check()`` between large writes to stop early on a full disk."""
    sink = HDF5Sink(tmp)
    try:
        yield sink
    except BaseException as exc:
        sink.close()
        if isinstance(exc, Exception):
            sink.check()  # the cause, rather than what it led to
        raise
    sink.close()
    sink.check()


@contextmanager
def atomic_hdf5(path: str | Path, **h5py_options):
    """Yield an ``h5py.File`` open for writing on a temporary file beside ``path``, renamed onto it
    on success; a failed write gives :class:`WriteFailed` (see the module docstring)."""
    import h5py

    with atomic_write(path) as tmp, hdf5_sink(tmp) as sink, h5py.File(sink, "w", **h5py_options) as f:
        yield f


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def strict_json(obj):
    """NaN/inf -> null (strict JSON; e.g. R^2 of an empty S/N bin)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [strict_json(v) for v in obj]
    return obj


def write_json(obj, path: str | Path) -> Path:
    """Write ``obj`` as indented strict JSON (non-finite numbers as null), atomically."""
    return write_text(json.dumps(strict_json(to_jsonable(obj)), indent=2, allow_nan=False) + "\n", path)


def write_netcdf(ds, path: str | Path) -> Path:
    """Write an xarray Dataset as netCDF-4 (h5netcdf engine), atomically. The one writer of
    ceilings, curves and the cube."""
    path = Path(path)
    if path.suffix != ".nc":
        raise ConfigError(f"output {path} must end in .nc")
    with atomic_write(path) as tmp, hdf5_sink(tmp) as sink:
        ds.to_netcdf(sink, engine="h5netcdf")
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``TARGET.lock`` beside it."""
    target = Path(os.path.abspath(target))
    if not target.name:
        raise ConfigError(f"cannot write to {target}: it has no name to put a lock beside")
    return target.with_name(f"{target.name}.lock")


def _unwritable(path: Path, exc: OSError, what: str) -> ConfigError:
    """The one-line error for a target whose place cannot be written, naming the culprit."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists() and not parent.is_dir():
            return ConfigError(f"{what} {path}: {parent} is a file, not a directory")
    reason = exc.strerror or str(exc)
    return ConfigError(f"{what} {path}: cannot write there ({reason}: {exc.filename or path})")


@contextmanager
def writer_lock(target: str | Path, what: str = "output") -> Iterator[Path]:
    """Hold the one-writer lock of ``target`` (a file or a directory, which need not exist yet) for
    the block; yields the lock file. Creates ``target``'s parent directory. A second writer gets
    :class:`OutputBusy` at once, naming the holder's PID and host; an unwritable place gets a
    ConfigError naming the path. ``what`` names the target in messages (e.g. "--out").

    The lock is ``fcntl.flock`` on ``TARGET.lock``: released by the kernel when the holder exits,
    however it dies, so a stale lock file never blocks. The file holds "PID HOST" and is removed on
    release (while still locked; a writer that opened the removed file notices and retries). On a
    file system without flock the block runs unlocked, with a warning."""
    target = Path(target)
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(target, exc, what) from exc
    unlocked = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _unwritable(target, exc, what) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in NO_FLOCK:
                log.warning("%s: this file system does not support flock (%s): writing without the lock", path, exc)
                unlocked = True
                break
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _unwritable(target, exc, what) from exc
            try:
                holder = path.read_text().split()
            except OSError:
                holder = []
            who = f"PID {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "") if holder else "another process"
            raise OutputBusy(
                f"{what} {target} is being written by {who} (lock {path}); wait for it to finish or stop it"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its previous holder between our open and flock: retry
    if unlocked:
        path.unlink(missing_ok=True)
        yield path
        return
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError as exc:  # a full disk: the holder's name does not fit
            raise write_failed(path, exc) if exc.errno in WRITE_ERRNOS else exc from None
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def remove_stale_temps(directory: str | Path, pattern: str = "*.tmp-*", recursive: bool = False) -> list[Path]:
    """Remove the ``NAME.tmp-PID`` files in ``directory`` (matching ``pattern``; with ``recursive``,
    also below it) whose writer PID is no longer alive; log each, and warn about those of a live
    process (left alone: with the writer lock held, that is a writer which takes no lock, or a
    reused PID). Call it while holding :func:`writer_lock` of the target. Returns the removed paths."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for tmp in sorted(directory.rglob(pattern) if recursive else directory.glob(pattern)):
        m = TEMP_SUFFIX.search(tmp.name)
        if m is None or not tmp.is_file():
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        if pid_alive(pid):
            log.warning("%s: temporary file of a live process (PID %d) left alone", tmp, pid)
            continue
        try:
            tmp.unlink()
        except OSError as exc:
            log.warning("%s: could not remove the temporary file of dead writer PID %d (%s)", tmp, pid, exc)
            continue
        log.info("%s: removed the temporary file of dead writer PID %d", tmp, pid)
        removed.append(tmp)
    return removed


# a folder path that is one word in any shell command and cannot climb out of its root
SAFE_PATH = re.compile(r"(?!(.*/)?\.\.(/|$))[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*")


def unsafe_path(value, absolute: bool = True) -> str | None:
    """Why ``value`` is not a safe folder path (:data:`SAFE_PATH`; a leading "/" too when
    ``absolute``), None when it is one."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    rest = value[1:] if absolute and value.startswith("/") else value
    if SAFE_PATH.fullmatch(rest):
        return None
    kind, extra = ("path", "") if absolute else ("relative path", ", no leading '/'")
    rule = "folder names of letters, digits, '_', '.', '-' joined by '/'; no '..'"
    return f"{value!r} is not a safe {kind} ({rule}{extra})"
