"""File-system primitives shared by every writer and reader of the package.

* `require_file` names what is wrong with an input path: missing, a folder, or not a regular
  file (``/dev/null``, a pipe), instead of calling all of them "does not exist".
* `atomic_write` writes through a temporary file in the target folder and a rename, so readers
  see the old file or the new one, never a partial one. With ``exclusive=True`` the final step
  is a hard link, which fails when the target appeared in the meantime: of two writers racing
  on one path exactly one succeeds.
* Temporary files (and folders, `temporary_folder`) are named
  ``.<name>.<host>.<pid>.<random>.tmp``; every write first removes leftovers of the same target
  whose writer (same host, that process id) is no longer alive, e.g. after a SIGKILL. A live
  writer's temporary file is never touched.
* `check_writable` proves up front that an output can be created (creating and removing any
  missing folders and a probe file), so a bad path fails before a long computation.
* `check_not_input` refuses an output path that is, or contains, one of the inputs.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable

__all__ = [
    "atomic_write",
    "check_not_input",
    "check_writable",
    "require_file",
    "temporary_folder",
]

_HOST = socket.gethostname().replace(".", "_") or "host"


def require_file(path: str | os.PathLike, what: str) -> str:
    """``path`` as a string if it is an existing regular file, else a clear error.

    Raises
    ------
    FileNotFoundError
        ``"<what> '<path>' does not exist"``.
    IsADirectoryError, ValueError
        For a folder (``"is a folder, not a file"``) or a device, pipe or socket
        (``"is not a regular file"``).
    """
    text = os.fspath(path)
    if os.path.isfile(text):
        return text
    if os.path.isdir(text):
        raise IsADirectoryError(f"{what} {text!r} is a folder, not a regular file")
    if os.path.exists(text):
        raise ValueError(f"{what} {text!r} is not a regular file")
    raise FileNotFoundError(f"{what} {text!r} does not exist")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale(parent: str, name: str) -> None:
    """Remove ``.<name>.<host>.<pid>.*.tmp`` files (and folders) of dead writers on this host."""
    prefix = f".{name}.{_HOST}."
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid_text = entry[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        full = os.path.join(parent, entry)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except OSError:
            pass


def _temporary_prefix(name: str) -> str:
    return f".{name}.{_HOST}.{os.getpid()}."


def temporary_folder(path: str | os.PathLike) -> str:
    """A new empty folder next to ``path``, to be filled and then renamed to ``path``; named
    like the temporary files of `atomic_write`, and leftovers of dead writers of the same
    ``path`` are removed first."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(os.path.normpath(path))
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name)
    return tempfile.mkdtemp(dir=parent, prefix=_temporary_prefix(name), suffix=".tmp")


def _fsync_dir(parent: str) -> None:
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, data: bytes | str, *, exclusive: bool = False, mode: int = 0o644
) -> str:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    Parameters
    ----------
    path : str or path-like
        Target file; missing parent folders are created.
    data : bytes or str
        Contents (``str`` is encoded as UTF-8).
    exclusive : bool
        Fail with `FileExistsError` if ``path`` exists when the write completes (it is then
        left untouched); otherwise replace it.
    mode : int
        Permission bits of the new file (before the umask).
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=_temporary_prefix(name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(parent)
    return path


def _link_exclusive(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"output {path!r} appeared while this command ran (another run writing it?); it "
            "was left as it is: pass --force to overwrite it"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # a file system without hard links: check, then rename (a small race remains)
        if os.path.lexists(path):
            raise FileExistsError(
                f"output {path!r} appeared while this command ran; pass --force to overwrite it"
            ) from None
        os.replace(tmp, path)


def check_writable(path: str | os.PathLike) -> None:
    """Prove that a file can be created at ``path``: create its missing parent folders and a
    probe file, then remove both again.

    Raises
    ------
    PermissionError
        Naming the path and the reason (read-only place, a file where a folder is needed, ...).
    """
    text = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(text))
    missing = []
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise PermissionError(f"cannot write output {text!r}: {parent!r} is not a folder")
        missing.append(parent)
        parent = os.path.dirname(parent)
    made, where = [], parent
    try:
        for folder in reversed(missing):
            where = folder
            os.mkdir(folder)
            made.append(folder)
        where = os.path.dirname(os.path.abspath(text))
        fd, probe = tempfile.mkstemp(dir=where, suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        what = f"cannot create {'folder' if where in missing else 'a file in'} {where!r}"
        raise PermissionError(f"cannot write output {text!r}: {what}: {reason}") from None
    finally:
        for folder in reversed(made):
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def check_not_input(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], what: str = "output"
) -> None:
    """Refuse an ``output`` path that is one of ``inputs`` (same path after resolving links, or
    the same file) or a folder that contains one; ``--force`` never overrides this.

    Raises
    ------
    ValueError
        Naming the output and the input it would destroy.
    """
    out = _real(output)
    for item in inputs:
        if item is None:
            continue
        text = os.fspath(item)
        if not os.path.exists(text):  # e.g. a built-in dataset name
            continue
        src = _real(text)
        same = src == out
        if not same and os.path.exists(out):
            try:
                same = os.path.samefile(src, out)
            except OSError:
                same = False
        if same:
            raise ValueError(
                f"{what} {os.fspath(output)!r} is the input {text!r}: writing it would destroy "
                "the input; choose another path"
            )
        if os.path.commonpath([src, out]) == out:
            raise ValueError(
                f"{what} {os.fspath(output)!r} contains the input {text!r}: writing it would "
                "destroy the input; choose another path"
            )
