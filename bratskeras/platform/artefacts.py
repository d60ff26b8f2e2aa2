"""Artefact kinds: what a command writes at a path, recognised by its content so `--overwrite` replaces only that.

An `ArtefactKind` names an artefact and judges an existing path ("is this a
file I would have written?"); bratskeras.platform.outputs.refuse_existing
asks it before anything is replaced. This module holds the kind itself and
generic ways to build one (a file with a magic number, a suffix, a zip
archive holding an entry, a text file with a header line). The kinds of
particular artefacts live beside their writers: the export formats' in
bratskeras.export.formats, the predicted maps' in bratskeras.predict.inference,
the CSVs' in bratskeras.evaluate.scoring; `KINDS` holds the rest.
"""

import os
import zipfile
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ArtefactKind:
    """What a command writes at a path, so `overwrite` can tell it from anything else (an input above all).

    Attributes:
        name: shown in messages ("LiteRT model", "SavedModel folder").
        is_folder: the artefact is a folder (SavedModel) rather than a file.
        problem: callable(path) -> None when an existing `path` holds this
            kind, judged by its content, else a few words saying why not
            ("its data are not integers", "foreign entries: notes.txt").
    """

    name: str
    is_folder: bool
    problem: Callable

    def recognise(self, path):
        """True when the existing `path` holds this kind of artefact."""
        return self.problem(os.fspath(path)) is None


def regular_file_problem(path):
    """None for a regular file (not a link, not a folder), else why not."""
    if os.path.islink(path) or not os.path.isfile(path):
        return "not a regular file"
    return None


def magic_file_kind(name, offset, magic, what):
    """ArtefactKind of a file whose bytes at `offset` are `magic` (`what` it then is, for messages)."""
    def problem(path):
        not_file = regular_file_problem(path)
        if not_file:
            return not_file
        with open(path, "rb") as stream:
            if stream.read(offset + len(magic))[offset:] != magic:
                return f"its content is not {what}"
        return None
    return ArtefactKind(name, False, problem)


def suffix_file_kind(name, suffix):
    """ArtefactKind of a regular file known only by its name ending `suffix` (a format without a magic number)."""
    def problem(path):
        return regular_file_problem(path) or (None if path.endswith(suffix) else f"not an {suffix} file")
    return ArtefactKind(name, False, problem)


def zip_archive_kind(name, entry, what):
    """ArtefactKind of a zip archive that holds `entry` (`what` that entry is, for messages)."""
    def problem(path):
        not_file = regular_file_problem(path)
        if not_file:
            return not_file
        if not zipfile.is_zipfile(path):
            return "not a zip archive"
        with zipfile.ZipFile(path) as archive:
            return None if entry in archive.namelist() else f"a zip archive without {what}"
    return ArtefactKind(name, False, problem)


def text_file_kind(name, first_line):
    """ArtefactKind of a text file (a CSV) whose first line starts with `first_line` (its header)."""
    def problem(path):
        not_file = regular_file_problem(path)
        if not_file:
            return not_file
        with open(path, "rb") as stream:
            head = stream.readline(len(first_line) + 1)
        if not head.startswith(first_line.encode()):
            return f"its first line is not the header {first_line.split(',')[0]},... this command writes"
        return None
    return ArtefactKind(name, False, problem)


# Kinds with no other home (the export formats' are their rows' in bratskeras.export.formats).
KINDS = {
    "png": magic_file_kind("PNG image", 0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
}
