"""Safe file output for the command line: a file appears whole or not at all, never replaces another one unless
asked to, and gets the permissions of any new file (``0o666`` less the umask)."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

#: errors of ``os.link`` on file systems without hard links (FAT, exFAT, some network shares)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def check_output(path: str | os.PathLike, *, replace: bool = False) -> Path:
    """Fail now if ``atomic_write(path, ..., replace=replace)`` would fail for a reason known now: ``path`` exists
    (without ``replace``) or is a folder, or its folder is missing, not a folder or not writable.

    Called before any long work, so that a bad output fails at once and names the folder, not a temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    if path.exists() and not replace:
        raise _exists_error(path)
    folder = path.parent
    if not folder.exists():
        raise FileNotFoundError(f"output folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} is not writable")
    return path


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} exists; use --force to replace it")


def _write_and_sync(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _create(path: Path) -> int:
    # mode 0o666, so that the kernel applies the umask (and a folder's default ACL) as for any new file;
    # tempfile.mkstemp's 0o600 would become the published file's mode
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def atomic_write(path: str | os.PathLike, data: bytes, *, replace: bool = False) -> Path:
    """Write ``data`` to ``path``: to a temporary file in the same folder, synced, then published under ``path``.

    Without ``replace``, publishing is a hard link, which fails if ``path`` exists at that moment, even if it was
    created while the data was being computed (``FileExistsError``). With ``replace`` it is a rename over ``path``.
    On a file system without hard links, the data is written straight into ``path`` created exclusively (still
    never replacing a file, but a crash can leave it partial).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = _create(tmp)
    try:
        _write_and_sync(fd, data)
        if replace:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _write_exclusively(path, data)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_exclusively(path: Path, data: bytes) -> None:
    try:
        fd = _create(path)
    except FileExistsError:
        raise _exists_error(path) from None
    try:
        _write_and_sync(fd, data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
