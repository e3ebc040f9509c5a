"""Atomic artefact writing and run directories.

Every artefact is written to a temporary file in the destination folder and renamed into place, so
an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vreid.core.errors import VreidError


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()  # read once: os.umask can only be read by setting it
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?")
"""Names :func:`atomic_path` gives its temporaries (``tempfile.mkstemp``'s 8 random characters)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file keeps ``path``'s suffix so libraries that choose a format by extension
    (numpy, Pillow, matplotlib) still work. The file ends up with the permissions a plain
    ``open()`` would give it (``mkstemp`` makes it private to its owner, which would hide
    reports, crops and checkpoints from the rest of a team on a shared machine).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as err:
            if err.filename is not None or err.errno is None:
                raise
            # A failed write (disk full, file too large, I/O error) names no file: name the one
            # being written, so the user sees which output could not be made.
            raise OSError(err.errno, err.strerror, str(path)) from None
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# image names in index files (one name a line)

NAME_ERRORS = "surrogateescape"
"""How names are encoded in index files: UTF-8 with ``surrogateescape``, so a file name that is
not valid UTF-8 (Python holds its undecodable bytes as surrogates, ``os.fsdecode``) is written as
its original bytes and read back as the same ``str``."""


def encode_name(name: str) -> str:
    """One index line for ``name``: a backslash, line feed or carriage return (all allowed in POSIX
    file names) is escaped as ``\\``, ``\n``, ``\r`` so every name is exactly one line."""
    if "\\" in name or "\n" in name or "\r" in name:
        name = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return name


def decode_name(line: str) -> str:
    """The name of an index line written by :func:`encode_name`."""
    if "\\" not in line:
        return line
    out, i = [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in "\\nr":
            out.append({"\\": "\\", "n": "\n", "r": "\r"}[line[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def names_bytes(names: Iterable[str]) -> bytes:
    """The bytes of a name index (one :func:`encode_name` line each, UTF-8 + surrogateescape)."""
    return "".join(f"{encode_name(str(n))}\n" for n in names).encode("utf-8", NAME_ERRORS)


def text_bytes(text: str) -> bytes:
    """``text`` (e.g. a CSV holding file names) as UTF-8 with names' undecodable bytes restored."""
    return text.encode("utf-8", NAME_ERRORS)


def write_names_atomic(path: str | os.PathLike[str], names: Iterable[str]) -> Path:
    """Write a name index (see :func:`names_bytes`) atomically; any file name round-trips."""
    data = names_bytes(names)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """The names of an index written by :func:`write_names_atomic`; unreadable → VreidError."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise VreidError(f"{path}: cannot read ({err.strerror or err})") from None
    lines = data.decode("utf-8", NAME_ERRORS).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # A raw carriage return is never written (names escape theirs): it is a CRLF line ending.
    return [decode_name(line.removesuffix("\r")) for line in lines]


def write_npy_atomic(path: str | os.PathLike[str], array: Any) -> Path:
    """Write ``array`` as a ``.npy`` file at ``path`` atomically and return the path."""
    import numpy as np

    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(path)


def read_npy(path: str | os.PathLike[str]) -> Any:
    """Read a ``.npy`` array written by vreid (no pickles); any unreadable file — missing, empty,
    truncated, not an array — is a :class:`VreidError` naming it."""
    import numpy as np

    p = Path(path)
    try:
        return np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise VreidError(f"{p}: file not found") from None
    except (ValueError, OSError, EOFError) as err:
        reason = "empty file" if p.is_file() and p.stat().st_size == 0 else str(err) or "truncated"
        raise VreidError(f"{p}: not a readable .npy array ({reason})") from None


def read_json(path: str | os.PathLike[str], *, kind: type = dict) -> Any:
    """Read a JSON file whose top level must be ``kind``; any problem is a :class:`VreidError`
    naming the file (an empty or hand-edited metrics.json never crashes a command)."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VreidError(f"{p}: file not found") from None
    except (ValueError, OSError) as err:
        raise VreidError(f"{p}: not valid JSON ({err})") from None
    if not isinstance(obj, kind):
        raise VreidError(f"{p}: expected a JSON {kind.__name__} at the top level")
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def new_run_dir(base: str | os.PathLike[str], name: str, *, resume: bool = False) -> Path:
    """Create ``base/name`` for a new run.

    An existing, non-empty run directory is never reused silently: with ``resume=False`` a fresh
    sibling ``name-2``, ``name-3`` … is created instead; with ``resume=True`` the existing one is
    returned so the run can continue.
    """
    base = Path(base)
    candidate = base / name
    if (
        resume
        or not candidate.exists()
        or not any(p.name != LOCK_FILE for p in candidate.iterdir())
    ):
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate
    i = 2
    while (base / f"{name}-{i}").exists():
        i += 1
    candidate = base / f"{name}-{i}"
    candidate.mkdir(parents=True)
    return candidate


LOCK_FILE = ".vreid.lock"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir`` for this process while the block runs; a second run on the same folder is
    refused with a :class:`VreidError` naming the holder (pid, host, command, start time).

    The lock is an ``flock`` on ``run_dir/.vreid.lock``: the kernel releases it when the holder
    exits, however it exits (SIGKILL included), so a stale lock can never block a later run; the
    file's text only says who holds it. On entry, stale temporaries of :func:`atomic_path` left by
    a killed writer (``.<name>.<random>.tmp<suffix>``) are removed: with the folder held, no other
    writer can own them.
    """
    import fcntl
    import socket
    import sys
    import time

    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise VreidError(
            f"{folder} is in use by {holder}; wait for it to finish or choose another folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {started})")
        handle.flush()
        remove_stale_temporaries(folder)
        yield folder
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` leaves when its process is killed mid-write
    (hidden ``.<stem>.<random>.tmp<suffix>`` files) anywhere under ``folder``; returns them. Call
    only on a folder this process holds (:func:`run_lock`)."""
    removed = []
    for p in Path(folder).rglob(".*.tmp*"):
        if p.is_file() and _TEMP_NAME.fullmatch(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def made_or_removed(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield ``folder`` (a run directory just made for this command); if the block fails, remove
    it, so a failed command leaves nothing behind and the next run does not move to ``name-2``."""
    path = Path(folder)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def refuse_overwrite(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Raise when ``path`` exists and the caller did not ask to overwrite it."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise VreidError(
            f"{p} already exists; pass --overwrite to replace it or choose another path"
        )


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically, close it, and return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    plt.close(fig)
    return path
