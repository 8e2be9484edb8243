"""Atomic writes of files and of whole folders: nothing half-written is ever in place.

- A file (:func:`atomic_write`) is written to a temporary sibling, fsynced, then renamed.
- A folder of several files (a model artifact, an export; :func:`atomic_directory`) is
  written into a temporary sibling folder and renamed into place in one step. An existing
  folder is replaced by an atomic exchange of the two names (``renameat2``), so a reader,
  or a ``kill -9`` at any moment, finds either the old folder or the new one, never a mix.
- Files that must go into a folder holding other things (a training run's artifact beside
  its checkpoint and logs; :func:`atomic_files`) are staged the same way and renamed in a
  given order: the last one commits (a card whose hash must match the weights).

Temporary names carry the writer's process id (``.NAME.partial-PID-XXXX``,
``.NAME.PID-XXXX.tmp``). Before writing, leftovers of writers that are no longer running
(killed mid-write) are removed, so a rerun also cleans up after the run it replaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (then its temporary files are in use)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale(name: str, target: str) -> tuple[str, int] | None:
    """(kind, pid) when ``name`` is one of our temporary names for ``target``, else None."""
    m = re.fullmatch(rf"\.{re.escape(target)}\.(?:(partial|old)-(\d+)-.+|(\d+)-.+\.tmp)", name)
    if m is None:
        return None
    if m.group(3) is not None:
        return "tmp", int(m.group(3))
    return m.group(1), int(m.group(2))


def clean_stale(path: str | Path) -> list[Path]:
    """Remove what killed writers of ``path`` left beside it; return what was removed.

    A temporary file or staging folder whose process is gone is deleted. A moved-aside old
    folder (``.NAME.old-PID-…``, only left when the atomic exchange is unavailable and the
    writer died between its two renames) is put back when ``path`` is missing.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in path.parent.iterdir():
        found = _stale(entry.name, path.name)
        if found is None or _alive(found[1]):
            continue
        if found[0] == "old" and not path.exists():
            os.rename(entry, path)  # the writer died before the new folder arrived
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for entry in folder.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            _fsync(entry)
    for sub in [*(p for p in folder.rglob("*") if p.is_dir()), folder]:
        _fsync(sub)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        _fsync(tmp_path)
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # kernel or filesystem without the flag: two renames instead
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def foreign_entries(folder: Path, replaceable: Collection[str]) -> list[str]:
    """Names in ``folder`` other than ``replaceable`` files and their temporary leftovers."""
    def ours(name: str) -> bool:
        return name in replaceable or any(
            name.startswith(f".{r}.") and name.endswith(".tmp") for r in replaceable)

    return sorted(p.name for p in folder.iterdir() if not ours(p.name))


def _publish(staging: Path, path: Path, replaceable: Collection[str]) -> None:
    """Move the finished ``staging`` folder to ``path``, replacing a previous one."""
    if not path.exists() and not path.is_symlink():
        os.rename(staging, path)
        return
    if not path.is_dir() or path.is_symlink():
        raise FileExistsError(f"{path} exists and is not a folder")
    foreign = foreign_entries(path, replaceable)
    if foreign:
        raise FileExistsError(f"{path} exists and holds other files ({', '.join(foreign[:3])}"
                              f"{' ...' if len(foreign) > 3 else ''}); choose a new or empty "
                              "folder")
    if not any(path.iterdir()):
        os.rename(staging, path)  # replaces an empty folder in one step
        return
    _replace_folder(staging, path)


def _replace_folder(staging: Path, path: Path) -> None:
    """Put the folder ``staging`` in place of the existing folder ``path``, then remove the
    old one: one atomic exchange, or (without it) two renames that clean_stale can undo."""
    if not _exchange(staging, path):
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
        os.rename(path, old)  # a crash here leaves `old`, which clean_stale puts back
        os.rename(staging, path)
        staging = old
    shutil.rmtree(staging)  # the previous folder, now under the staging name


@contextlib.contextmanager
def atomic_directory(path: str | Path, replaceable: Collection[str] = ()) -> Iterator[Path]:
    """Build a folder in a temporary sibling; on success it becomes ``path`` in one rename.

    Args:
        path: the folder to create (or replace).
        replaceable: file names an existing ``path`` may hold for it to be replaced (e.g.
            the artifact's own files). An existing folder with anything else in it is never
            touched: FileExistsError. An empty existing folder is always replaced.

    Example:
        >>> with atomic_directory("runs/new", replaceable={"card.json"}) as tmp:
        ...     (tmp / "card.json").write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-",
                                    dir=path.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        _fsync_tree(staging)
        _publish(staging, path, set(replaceable))
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_files(folder: str | Path, write: Callable[[Path], None], order: list[str],
                 others_first: bool = False) -> None:
    """Write files into an existing ``folder`` that holds other things too.

    ``write(staging)`` creates the files named in ``order`` in a temporary sibling folder;
    each is then renamed into ``folder`` in that order. Each rename is atomic; the last
    file is the commit point (e.g. a card whose hash must match the weights renamed before
    it), so a crash between two renames leaves a mismatch that a loader refuses.

    With ``others_first`` every other entry ``write`` made (a file or a whole folder, e.g.
    a model's pill finder) is moved in before ``order``, replacing one of the same name;
    without it such entries are discarded.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-{os.getpid()}-",
                                    dir=folder.parent))
    try:
        write(staging)
        missing = [name for name in order if not (staging / name).is_file()]
        if missing:
            raise FileNotFoundError(f"atomic_files: write() did not create {missing}")
        others = sorted(p.name for p in staging.iterdir() if p.name not in order)
        _fsync_tree(staging)
        for name in order:
            os.chmod(staging / name, 0o666 & ~_umask())
        if others_first:
            for name in others:
                _move_in(staging / name, folder / name)
        for name in order:
            os.replace(staging / name, folder / name)
        _fsync(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_in(entry: Path, target: Path) -> None:
    """Rename ``entry`` to ``target``; a folder there is replaced by it (_replace_folder)."""
    if entry.is_dir() and not entry.is_symlink():
        os.chmod(entry, 0o777 & ~_umask())
        if target.is_dir() and not target.is_symlink():
            _replace_folder(entry, target)
            return
    else:
        os.chmod(entry, 0o666 & ~_umask())
    os.replace(entry, target)
