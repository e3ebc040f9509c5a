"""Shared parsing helpers for the dataset readers: label XML, name and track files, safe names.

Every problem raises :class:`~vreid.core.errors.DatasetError` naming the file (and line) and what is
wrong. Reading only stats files (one directory listing per folder); opening images is
``vreid data check``'s job.
"""

from __future__ import annotations

import os
import warnings
import xml.parsers.expat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vreid.core.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File suffixes read as images (lower case); every reader and folder walker uses these."""


def is_image_name(name: str) -> bool:
    """Whether a file name is read as an image: an image suffix and not hidden.

    Hidden names are skipped because they are never the user's pictures: the temporary file of an
    interrupted atomic write (``.<stem>.<random>.tmp.png``) or macOS's ``._<name>.jpg`` metadata
    files copied onto other file systems; reading either would give a broken or wrong image.
    """
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root``, hidden files and folders excluded, in walk order (folders and
    files sorted by name). Symbolic links to folders are not followed."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


@dataclass(frozen=True, slots=True)
class LabelItem:
    """One ``<Item …/>`` element of a label XML file, with its 1-based line number."""

    attrs: dict[str, str]
    line: int


def read_text(path: Path) -> str:
    """Read a label/name/track file as text: UTF-8 first, then GB2312 (the declared AIC encoding)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb2312")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}: not valid UTF-8 or GB2312 text; re-save it as UTF-8"
        ) from None


def parse_label_xml(path: Path) -> list[LabelItem]:
    """Return every ``Item`` element of an AIC/VeRi label XML file in file order.

    The files declare ``encoding="gb2312"``, which expat does not support; the bytes are decoded
    first (UTF-8, else GB2312) and fed to expat as UTF-8, ignoring the declaration. When the
    ``<Items number="N">`` count disagrees with the Items listed (an edited or partly copied file),
    the listed ones are read and a warning names the file and both counts.
    """
    text = read_text(path)
    parser = xml.parsers.expat.ParserCreate("utf-8")
    items: list[LabelItem] = []
    declared: list[tuple[str, int]] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "Item":
            items.append(LabelItem(attrs, parser.CurrentLineNumber))
        elif name == "Items" and "number" in attrs:
            declared.append((attrs["number"], parser.CurrentLineNumber))

    parser.StartElementHandler = start
    try:
        parser.Parse(text.encode("utf-8"), True)
    except xml.parsers.expat.ExpatError as err:
        raise DatasetError(
            f"{path}, line {err.lineno}: label file does not parse as XML "
            f"({xml.parsers.expat.ErrorString(err.code)}, column {err.offset + 1})"
        ) from None
    if len(declared) == 1 and declared[0][0].strip().isdigit():
        number, line = int(declared[0][0]), declared[0][1]
        if number != len(items):
            warnings.warn(
                f"{path}, line {line}: Items number={number} but the file lists {len(items)} "
                f"Item elements; reading the {len(items)} listed (is the file complete?)",
                stacklevel=2,
            )
    return items


def read_lines(path: Path) -> list[str]:
    """The lines of a text file (any line ending), without their line breaks."""
    return read_text(path).splitlines()


def data_lines(path: Path) -> Iterator[tuple[str, str]]:
    """``(where, text)`` for every non-blank line of a label file: ``where`` is ``"<path>, line
    N"`` (1-based, what every reader's error names), ``text`` the line without surrounding space."""
    for i, line in enumerate(read_lines(path), start=1):
        text = line.strip()
        if text:
            yield f"{path}, line {i}", text


def read_name_file(path: Path) -> list[tuple[str, int]]:
    """``(name, line)`` for every non-blank line of a ``name_*.txt`` file (one image name a line)."""
    out = []
    for i, line in enumerate(read_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise DatasetError(
                f"{path}, line {i}: expected one image name per line, got {line.strip()!r}"
            )
        out.append((name, i))
    return out


def check_name(name: str, where: str) -> str:
    """Return ``name`` (an image path relative to a split folder) if it stays inside that folder.

    Absolute names, drive letters, ``..`` parts and backslashes are refused with a
    :class:`DatasetError` mentioning ``where`` (``"file, line N"``).
    """
    if not name:
        raise DatasetError(f"{where}: empty image name")
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        raise DatasetError(
            f"{where}: image name {name!r} holds the control character {bad!r}; "
            "is the file binary or damaged?"
        )
    # String tests (pathlib is ~10x slower and this runs once per image).
    if (
        name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
        or (".." in name and ".." in name.split("/"))
    ):
        raise DatasetError(
            f"{where}: image name {name!r} escapes the dataset root; names must be relative "
            "paths inside the split folder (no '..', no absolute paths)"
        )
    return name


class FolderIndex:
    """Existence checks for many files under one folder with one listing per directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._listings: dict[str, frozenset[str]] = {}

    def _listing(self, sub: str) -> frozenset[str]:
        if sub not in self._listings:
            try:
                with os.scandir(self.folder / sub if sub else self.folder) as it:
                    self._listings[sub] = frozenset(e.name for e in it)
            except (FileNotFoundError, NotADirectoryError):
                self._listings[sub] = frozenset()
        return self._listings[sub]

    def exists(self, name: str) -> bool:
        """True if ``folder/name`` exists (``name`` already checked by :func:`check_name`)."""
        sub, _, base = name.rpartition("/")
        return base in self._listing(sub)


def require_images(folder: Path, names: Iterable[tuple[str, str]]) -> None:
    """Raise for the first ``(name, where)`` whose image is missing from ``folder``."""
    index = FolderIndex(folder)
    missing = [(n, w) for n, w in names if not index.exists(n)]
    if missing:
        name, where = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(
            f"{where}: lists image {name!r}, which is missing from {folder}{more}; "
            "restore the image or remove it from the label file"
        )


def check_unique(names: Sequence[tuple[str, str]]) -> None:
    """Raise for the first ``(name, where)`` whose name was already listed."""
    seen: dict[str, str] = {}
    for name, where in names:
        if name in seen:
            raise DatasetError(
                f"{where}: duplicate image name {name!r} (first listed at {seen[name]})"
            )
        seen[name] = where


def read_label_items(label_file: Path) -> list[tuple[str, LabelItem, str]]:
    """``(image name, item, "file, line N")`` for every Item of a label XML file, in file order.

    Every item must have an ``imageName`` that stays inside the dataset root; a name listed twice
    is an error naming both lines.
    """
    out = []
    for item in parse_label_xml(label_file):
        where = f"{label_file}, line {item.line}"
        if "imageName" not in item.attrs:
            raise DatasetError(f"{where}: Item has no imageName attribute")
        out.append((check_name(item.attrs["imageName"], where), item, where))
    check_unique([(name, where) for name, _, where in out])
    return out


def read_checked_name_file(name_file: Path) -> list[tuple[str, str]]:
    """``(image name, "file, line N")`` for every line of a ``name_*.txt`` file; names checked, unique."""
    listed = [
        (check_name(n, f"{name_file}, line {i}"), f"{name_file}, line {i}")
        for n, i in read_name_file(name_file)
    ]
    check_unique(listed)
    return listed


def list_images(folder: Path) -> list[str]:
    """Sorted image file names directly in ``folder`` (non-recursive; hidden files skipped)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_name(e.name))


def parse_tracks(
    path: Path, names: Sequence[str], *, by_index: bool, skip_tokens: int = 0
) -> dict[str, int]:
    """Map image name → 0-based track id (line number) from a track file.

    ``by_index``: lines hold 1-based indices into ``names`` (``*_track_id.txt``); otherwise image
    names (``*_track.txt``). An image in two tracks, an index out of range or an unknown name is
    an error. ``skip_tokens`` skips leading tokens per line (1 for VeRi's keyed form).
    """
    position = None if by_index else {n: i for i, n in enumerate(names)}
    track_of: dict[str, int] = {}
    for line_no, line in enumerate(read_lines(path)):
        tokens = line.split()[skip_tokens:]
        where = f"{path}, line {line_no + 1}"
        for tok in tokens:
            if by_index:
                try:
                    idx = int(tok)
                except ValueError:
                    raise DatasetError(
                        f"{where}: track entry {tok!r} is not an image index (1-based integer)"
                    ) from None
                if not 1 <= idx <= len(names):
                    raise DatasetError(
                        f"{where}: track index {idx} out of range; the split has "
                        f"{len(names)} images (indices 1..{len(names)})"
                    )
                name = names[idx - 1]
            else:
                name = tok
                assert position is not None
                if name not in position:
                    raise DatasetError(f"{where}: track lists image {name!r}, not in the split")
            if name in track_of:
                raise DatasetError(
                    f"{where}: image {name!r} is already in track {track_of[name]} "
                    f"(line {track_of[name] + 1}); each image belongs to one track"
                )
            track_of[name] = line_no
    return track_of


def parse_int(value: str, what: str, where: str) -> int:
    """``int(value)`` or a :class:`DatasetError` naming ``what`` and ``where``."""
    try:
        return int(value.strip())
    except ValueError:
        raise DatasetError(f"{where}: {what} {value!r} is not an integer") from None


def parse_camera(value: str, where: str) -> int:
    """AIC/VeRi camera id: ``'c026'`` → 26 (a bare number is accepted too)."""
    text = value.strip()
    digits = text[1:] if text[:1] in ("c", "C") else text
    if not digits.isdigit():
        raise DatasetError(f"{where}: cameraID {value!r} is not of the form 'c026'")
    return int(digits)


# ---------------------------------------------------------------------------------------------
# symbolic links that leave the dataset root

FOLLOW_LINKS_HINT = (
    "copy it into the root, or opt in to links that leave it with --follow-links "
    "(data.follow_links: true)"
)


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def check_links(root: Path, paths: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse image paths under ``root`` that reach outside it through a symbolic link.

    The rule the label files' names keep (:func:`check_name`) held for what links resolve to: a
    folder on the way from ``root`` to an image (a split folder, an identity folder) or the image
    itself may be a link only to somewhere inside ``root`` (resolved). The first offender is a
    :class:`DatasetError` naming the link and its target (and how many more there are).

    Fast on trees without links: one ``lstat`` per distinct folder and one ``os.scandir`` per folder
    (its entries' link bit comes with the listing), no per-image ``resolve()``; only links are
    resolved.
    """
    root_s = os.path.abspath(root)
    root_real = os.path.realpath(root_s)
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        full = os.path.abspath(path)
        head, _, base = full.rpartition(os.sep)
        by_dir.setdefault(head, []).append(base)
    bad: list[tuple[str, str]] = []
    link_ok: dict[str, bool] = {}

    def folder_ok(folder: str) -> bool:
        # every component from root down to ``folder``
        if folder in link_ok:
            return link_ok[folder]
        if folder == root_s or not folder.startswith(root_s + os.sep):
            link_ok[folder] = True
            return True
        parent = os.path.dirname(folder)
        ok = folder_ok(parent)
        if ok and os.path.islink(folder):
            target = os.path.realpath(folder)
            if not _inside(target, root_real):
                bad.append((folder, target))
                ok = False
        link_ok[folder] = ok
        return ok

    for folder, names in by_dir.items():
        if not folder_ok(folder):
            continue
        try:
            with os.scandir(folder) as it:
                links = {e.name for e in it if e.is_symlink()}
        except OSError:
            continue  # the reader reports missing folders/images itself
        for name in names:
            if name in links:
                link = os.path.join(folder, name)
                target = os.path.realpath(link)
                if not _inside(target, root_real):
                    bad.append((link, target))
    if bad:
        link, target = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DatasetError(
            f"{link}: a symbolic link to {target}, outside the dataset root {root_real}{more}; "
            + FOLLOW_LINKS_HINT
        )


def present(path: Path) -> bool:
    """Whether an optional label/name/track file is there: ``True`` for a file, ``False`` when
    nothing is at ``path``; anything else there (a folder, a broken link) is a
    :class:`DatasetError`, so a label file replaced by a folder is never read as "no labels"."""
    if path.is_file():
        return True
    if os.path.lexists(path):
        what = "a broken link" if path.is_symlink() and not path.exists() else "not a file"
        raise DatasetError(f"{path}: {what}; it must be the label file or be absent")
    return False
