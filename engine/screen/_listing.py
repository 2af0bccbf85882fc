"""The inputs of a screen, streamed: folders walked, list files read a line at a time.

Nothing here holds the whole listing: an archive list of millions of lines is
read line by line, and each path is handed on as soon as it is read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Iterator

#: An input file with one of these suffixes is a list of paths, not an image.
LIST_SUFFIXES = {".txt", ".lst", ".list", ".csv"}


def iter_inputs(inputs: list[str | os.PathLike], on_skip: Callable[[str, str], None] | None = None) -> Iterator[str]:
    """Every input file, one path string at a time, as the engine names it (``str(Path(p))``).

    Args:
        inputs: folders (walked like ``asinfer predict`` walks them), list files (``.txt``,
            ``.lst``, ``.list``: one path per line; ``.csv``: a ``path`` column), or image files.
            Relative paths in a list file are taken from the list file's folder.
        on_skip: called with ``(path, why)`` for entries a folder walk passes over on purpose.

    Yields:
        File paths; a folder that holds no image, or cannot be listed, is yielded itself so that
        the engine gives it its row (``empty``, ``unreadable``) and no input goes missing.

    Raises:
        ValueError: a CSV list without a ``path`` column.
        OSError: a list file that cannot be read.
    """
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in _list_lines(path):
                yield from _expand(_resolve(path.parent, line), on_skip)
        else:
            yield from _expand(path, on_skip)


def _list_lines(path: Path) -> Iterator[str]:
    """The paths of a list file: a CSV's ``path`` column, or each non-empty line not starting with ``#``."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: a CSV list needs a 'path' column; its columns are {reader.fieldnames}")
            for row in reader:
                if row["path"]:
                    yield row["path"]
            return
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip() and not line.startswith("#"):
                yield line


def _resolve(folder: Path, line: str) -> Path:
    path = Path(line.replace("\0", "\\0"))  # a NUL cannot be in a path: keep the line, the engine says not-found
    return path if path.is_absolute() else folder / path


def _expand(path: Path, on_skip) -> Iterator[str]:
    """A file as it is; a folder's image files (or the folder itself when it gives none)."""
    from asinfer import engine

    try:
        is_folder = os.path.isdir(path)
    except (OSError, ValueError):
        is_folder = False
    if not is_folder:
        yield str(path)
        return
    found = False
    for item in engine.walk(path, on_skip):
        if isinstance(item, tuple):  # a folder that cannot be listed: the engine says so in its row
            yield str(item[0])
        else:
            yield str(item)
        found = True
    if not found:
        yield str(path)
