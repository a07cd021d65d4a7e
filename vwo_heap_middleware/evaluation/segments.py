"""VWO's segment DSL, compiled once per settings revision into closures.

Read the way vwo-fme-python-sdk reads it (``packages/segmentation_evaluator``:
``segment_evaluator.py``, ``segment_operand_evaluator.py``), quirks included: ``{}`` passes, only
a node's first key counts, unknown operators are false, values compare after the SDK's
``float()`` conversion (``"1e3" == "1000"``). ``inlist`` is answered from the memberships the
engine looked up before. Operators answered from user details, the raw request, storage or web
campaigns are refused at compile time (``Unsupported``): the SDK decides those flags.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .flag_index import (
    INLIST,
    REQUEST_OPERATORS,
    USER_DETAILS_OPERATORS,
    membership_value,
    segment_items,
)
from .outcome import MembershipKey

# Segment operators answered from user details, the request, storage or web campaigns.
SDK_OPERATORS = USER_DETAILS_OPERATORS | REQUEST_OPERATORS | {"featureId", "campaignVariation"}


class Unsupported(Exception):
    """Compile time: the SDK decides this whole flag; the message says why."""


class Memberships:
    """One evaluation's segment membership answers, which it consulted (``asked``), and
    whether one it wanted was missing."""

    __slots__ = ("answers", "asked", "missing")

    def __init__(self, answers: Mapping[MembershipKey, bool | None]) -> None:
        self.answers = answers
        self.asked: list[MembershipKey] = []
        self.missing = False


Segment = Callable[[Mapping[str, Any], Memberships], bool]
"""A compiled segment: ``segment(custom variables, memberships) -> passes``."""


def _always(properties: Mapping[str, Any], call: Memberships) -> bool:
    return True


def _never(properties: Mapping[str, Any], call: Memberships) -> bool:
    return False


def compile_segment(dsl: Any) -> Segment:
    """A segment DSL as the SDK's ``validate_segmentation`` reads it (``{}`` passes)."""
    if isinstance(dsl, dict) and not dsl:
        return _always
    _refuse_sdk_operators(dsl)
    return _node(dsl)


def _refuse_sdk_operators(dsl: Any) -> None:
    for key, _ in segment_items([dsl]):
        if key in SDK_OPERATORS:
            raise Unsupported(f"a {key!r} segment")


def _node(dsl: Any) -> Segment:
    if not isinstance(dsl, dict) or not dsl:
        raise Unsupported("a segment node that is not a non-empty object")
    operator = next(iter(dsl))  # only a node's first key counts
    value = dsl[operator]
    if operator == "not":
        inner = _node(value)
        return lambda p, c: not inner(p, c)
    if operator in ("and", "or"):
        if not isinstance(value, list):
            raise Unsupported(f"an {operator!r} node that is not a list")
        parts = tuple(_node(item) for item in value)
        if operator == "and":
            return lambda p, c: all(part(p, c) for part in parts)
        return lambda p, c: any(part(p, c) for part in parts)
    if operator == "custom_variable":
        return _custom_variable(value)
    if operator == "user":
        if not isinstance(value, str):
            raise Unsupported("a 'user' segment that is not a string")
        users = frozenset(user.strip() for user in value.split(","))
        return lambda p, c: p.get("_vwoUserId") in users
    return _never  # unknown operators are false


def _custom_variable(value: Any) -> Segment:
    if not isinstance(value, dict) or not value:
        raise Unsupported("a 'custom_variable' segment that is not a non-empty object")
    name = next(iter(value))
    operand = value[name]
    if not isinstance(operand, str):
        raise Unsupported("a 'custom_variable' operand that is not a string")
    if "inlist" in operand:
        match = INLIST.search(operand)
        if match is None:
            return _never
        list_id = match.group(1)

        def inlist(p: Mapping[str, Any], c: Memberships) -> bool:
            if name not in p:
                return False
            key = (list_id, membership_value(p[name]))
            c.asked.append(key)
            answer = c.answers.get(key)
            if answer is None:
                c.missing = True
                return False
            return answer

        return inlist
    compare = _comparison(operand)

    def custom(p: Mapping[str, Any], c: Memberships) -> bool:
        return name in p and compare(_converted(_tag_value(p[name])))

    return custom


def _tag_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    return str(value)


def _converted(value: Any) -> str:
    """The SDK's ``convert_value``: numbers compare as numbers (``"1e3" == "1000"``)."""
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except ValueError:
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


_LOWER = re.compile(r"^lower\((.*)\)")
_WILDCARD = re.compile(r"^wildcard\((.*)\)")
_REGEX = re.compile(r"^regex\((.*)\)")
_ORDER = (
    (re.compile(r"^gt\(([\d.]+)\)$"), lambda order: order > 0),
    (re.compile(r"^gte\(([\d.]+)\)$"), lambda order: order >= 0),
    (re.compile(r"^lt\(([\d.]+)\)$"), lambda order: order < 0),
    (re.compile(r"^lte\(([\d.]+)\)$"), lambda order: order <= 0),
)


def _comparison(operand: str) -> Callable[[str], bool]:
    """The operand's test of a converted tag value, with the operand parsed once."""
    if match := _LOWER.search(operand):
        lowered = _converted(match.group(1)).lower()
        return lambda tag: tag.lower() == lowered
    if match := _WILDCARD.search(operand):
        inner = match.group(1)
        starts, ends = inner.startswith("*"), inner.endswith("*")
        part = _converted(inner.lstrip("*").rstrip("*"))
        if starts and ends:
            return lambda tag: part in tag
        if starts:
            return lambda tag: tag.endswith(part)
        if ends:
            return lambda tag: tag.startswith(part)
        return lambda tag: tag == part
    if match := _REGEX.search(operand):
        try:
            pattern = re.compile(_converted(match.group(1)))
        except re.error:
            return lambda tag: False
        return lambda tag: pattern.search(tag) is not None
    for regex, holds in _ORDER:
        if match := regex.search(operand):
            bound = _converted(match.group(1))
            return _ordered(bound, holds)
    expected = _converted(operand)
    return lambda tag: tag == expected


def _ordered(bound: str, holds: Callable[[int], bool]) -> Callable[[str], bool]:
    numeric = _is_numeric_version(bound)

    def compare(tag: str) -> bool:
        return _is_numeric_version(tag) == numeric and holds(_compare_versions(tag, bound))

    return compare


def _is_numeric_version(version: str) -> bool:
    return bool(version) and all(part.isdigit() for part in version.split("."))


def _compare_versions(first: str, second: str) -> int:
    """The SDK's dotted compare; raises where it raises (``int("x")``), so the SDK answers."""
    parts1, parts2 = first.split("."), second.split(".")
    for i in range(max(len(parts1), len(parts2))):
        part1 = parts1[i] if i < len(parts1) else "0"
        part2 = parts2[i] if i < len(parts2) else "0"
        if part1.isdigit():
            num1, num2 = int(part1), int(part2)
            if num1 != num2:
                return -1 if num1 < num2 else 1
        elif part1 != part2:
            return -1 if part1 < part2 else 1
    return 0
