"""Heap segment membership as VWO attribute lists: ``{list id: {identity, ...}}``.

JSON files map list ids to arrays of identities; CSV files have the header ``list_id,identity``.
Identities compare exactly: case-sensitive, unicode as is, no trimming.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from .flags_file import DataFileError, read_text

Segments = dict[str, frozenset[str]]


def load_segments_file(path: str | Path) -> Segments:
    path = Path(path)
    source = f"segments file {path}"
    text = read_text(path, source)
    if path.suffix.lower() == ".csv":
        return _from_csv(text, source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{source}: not valid JSON ({exc})") from exc
    return build_segments(document, source=source)


def build_segments(document: object, *, source: str = "segments") -> Segments:
    """Check a ``{list id: [identity, ...]}`` mapping and freeze it."""
    if not isinstance(document, Mapping):
        raise DataFileError(f'{source}: must be an object like {{"<list id>": ["<identity>"]}}')
    segments: Segments = {}
    for list_id, members in document.items():
        if not isinstance(list_id, str) or not list_id:
            raise DataFileError(f"{source}: list id {list_id!r} must be a non-empty string")
        if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
            raise DataFileError(f"{source}: list {list_id!r} must be an array of identities")
        bad = [m for m in members if not isinstance(m, str)]
        if bad:
            raise DataFileError(
                f"{source}: list {list_id!r} has {bad[0]!r}; identities must be strings"
            )
        segments[list_id] = frozenset(members)
    return segments


def _from_csv(text: str, source: str) -> Segments:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["list_id", "identity"]:
        raise DataFileError(f"{source}: the first line must be the header list_id,identity")
    lists: dict[str, set[str]] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0]:
            raise DataFileError(f"{source}: line {line} must be <list id>,<identity>")
        lists.setdefault(row[0], set()).add(row[1])
    return {list_id: frozenset(members) for list_id, members in lists.items()}
