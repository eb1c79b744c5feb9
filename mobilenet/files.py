"""Atomic writes, checksums, the build folder's lock, and disk errors named by their file."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temp path beside `final`; rename it into place only if the block succeeds.

    An interrupted or failed write never leaves a half-written file under the final name,
    and never destroys the previous good file. A write the disk refused is re-raised naming
    `final`, so the one-line error says which file could not be written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Keep the extension last: some exporters choose a format by it.
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as exc:
        raise _named(exc, final) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _named(exc: OSError, final: Path) -> OSError:
    code = exc.errno
    if code is None and shutil.disk_usage(final.parent).free < (1 << 20):
        code = errno.ENOSPC  # numpy's tofile reports a short write without an errno
    if code is None or exc.filename:
        return exc
    return OSError(code, os.strerror(code), str(final))


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_SHA_CACHE: dict[tuple, str] = {}


def sha256_cached(path: Path) -> str:
    """sha256 of a file, hashed once per process while its size, mtime and inode hold."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


class BuildFolderBusy(RuntimeError):
    pass


_HELD_LOCKS: dict[str, int] = {}
LOCK_HANDOFF_ENV = "MOBILENET_BUILD_LOCK_HANDOFF"  # "<holder pid>:<lock fd>", set by lock_handoff() for a child


def hold_build_lock(build_dir: Path) -> None:
    """Make this process the only one working in `build_dir` until it exits.

    Two runs in one build folder would overwrite each other's artifacts and results, so a
    second one stops at once and names the first. The lock is an flock on build/.lock,
    which the kernel releases when the holder exits, killed or not; calling again from the
    same process (the next task of one `invoke` chain) is a no-op. A build step the holder
    runs as its own child process is let in (lock_handoff); no other process is.
    """
    import fcntl
    build_dir = Path(build_dir)
    key = str(build_dir.resolve())
    if key in _HELD_LOCKS:
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = build_dir / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        inherited = _handed_down(holder, fd)
        os.close(fd)
        if inherited is None:
            raise BuildFolderBusy(f"another run (pid {holder}) is using {build_dir}; wait for it to finish, "
                                  f"or stop it, before starting a new one") from None
        _HELD_LOCKS[key] = inherited
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD_LOCKS[key] = fd  # kept open for the life of the process: closing it would unlock


def _handed_down(holder: str, lock_fd: int) -> int | None:
    """The lock descriptor this process inherited from the run holding the lock, or None.

    Let in only when the holder named in LOCK_HANDOFF_ENV is this process's parent and the
    pid written in the lock file, and the descriptor it passed is that lock file: a copied
    environment, a grandchild or an unrelated process is refused.
    """
    pid, _, fd = os.environ.get(LOCK_HANDOFF_ENV, "").partition(":")
    if not (pid and fd.isdigit() and pid == holder == str(os.getppid())):
        return None
    try:
        same_file = os.path.samestat(os.fstat(int(fd)), os.fstat(lock_fd))
    except OSError:
        return None
    if not same_file:
        return None
    os.set_inheritable(int(fd), False)  # this process's own children (workers) do not get it
    return int(fd)


def lock_handoff(build_dir: Path) -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment and descriptor that let a child process of this one work in `build_dir`
    under this process's lock: pass them to subprocess.Popen(env=..., pass_fds=...).

    The child keeps the lock's descriptor, so the folder stays locked until the child has
    exited even if this process is killed first.
    """
    hold_build_lock(build_dir)
    fd = _HELD_LOCKS[str(Path(build_dir).resolve())]
    return {LOCK_HANDOFF_ENV: f"{os.getpid()}:{fd}"}, (fd,)


class StorageError(ValueError):
    """The disk said no (full, read-only, no permission): one line naming the path."""


DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def disk_error(exc: BaseException) -> StorageError | None:
    """The one-line StorageError for an OSError the disk raised (full, read-only, no
    permission), looking through the causes a library may have wrapped it in; else None."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            path = exc.filename or "the build folder"
            return StorageError(f"cannot write {path}: {exc.strerror}. Free space or fix the permissions, or "
                                f"point MOBILENET_BUILD_DIR at another folder; nothing built before was lost")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def io_errors():
    """Turn a disk's refusal to store outputs into one line that names the path and the cause.

    Writes go through atomic_path, so whatever was built before the error is still in place.
    """
    try:
        yield
    except Exception as exc:
        storage = disk_error(exc)
        if storage is None:
            raise
        raise storage from None
