"""``vwo-heap check``: the flag keys and variables an app's code and templates use, against VWO's
settings.

Python is read with ``ast`` (``requires_flag("…")`` and the other guards,
``flags.enabled("…")``, ``flags.variable("…", "…", default)``, ``flags["…"]``,
``flags.track("…")`` (an event some flag must measure),
``requires_flag_key = "…"``, ``override_flags({...})``, ``flag_overrides.set("…")``, Django's
``VWO_HEAP = {"flags": (...)}``); templates with patterns (Jinja's ``flags.enabled('…')`` and
``flags.variable('…', '…', default)``, the Django tags ``{% flag "…" %}`` and
``{% flag_variable "…" "…" default %}``); any file for ``VWO_HEAP_FLAGS=…``.
"""

from __future__ import annotations

import ast
import bisect
import difflib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluation.flag_index import metric_names
from ..state.files import read_bounded

SKIPPED_DIRECTORIES = frozenset(
    {".git", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".tox", "site"}
)
TEMPLATE_SUFFIXES = frozenset({".html", ".htm", ".jinja", ".jinja2", ".j2", ".txt", ".xml"})
CONFIG_NAMES = frozenset({".env", "Makefile", "Dockerfile", "Procfile"})
CONFIG_SUFFIXES = frozenset({".env", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".sh"})
NO_DEFAULT = object()
GUARDS = frozenset({"requires_flag", "requires_flag_dependency", "requires_flag_permission"})
MAX_SOURCE_BYTES = 16 * 1024 * 1024  # a file larger than this is not read (generated, a dump)


class Unreadable(Exception):
    """A path ``check`` was asked to read and cannot: missing, a loop, too deeply nested."""


def _quoted(name: str) -> str:
    """A quoted string literal, its text as group ``name``."""
    return rf"""(?P<q_{name}>['"])(?P<{name}>(?:(?!(?P=q_{name})).)+)(?P=q_{name})"""


_JINJA = re.compile(
    rf"flags\s*\.\s*(?P<kind>enabled|variable)\(\s*{_quoted('key')}"
    rf"(?:\s*,\s*{_quoted('variable')})?(?:\s*,\s*(?P<default>[^)]*?))?\s*\)"
)
_JINJA_ITEM = re.compile(rf"flags\s*\[\s*{_quoted('key')}\s*\]")
_DJANGO_FLAG = re.compile(rf"{{%\s*flag\s+{_quoted('key')}\s*%}}")
_DJANGO_VARIABLE = re.compile(
    rf"{{%\s*flag_variable\s+{_quoted('key')}\s+{_quoted('variable')}"
    r"(?:\s+(?P<default>.+?))?\s*%}"
)
_FLAGS_SETTING = re.compile(r"""VWO_HEAP_(?:CLIENT_)?FLAGS['"]?\s*[:=]\s*['"]?([\w.\-, ]+)""")
# VWO's variable types and the Python types a default of each may have.
VARIABLE_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "double": (int, float),
    "boolean": (bool,),
    "json": (dict, list),
}


@dataclass(frozen=True)
class Usage:
    """One place that names a flag (and perhaps a variable with a default)."""

    path: str
    line: int
    flag: str  # or, for ``event``, the conversion's event name (``flags.track("…")``)
    variable: str | None = None
    default: Any = NO_DEFAULT
    event: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Problem:
    usage: Usage
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.usage.path,
            "line": self.usage.line,
            "flag": self.usage.flag,
            "message": self.message,
        }


def usages(paths: Iterable[str | Path]) -> list[Usage]:
    """Every flag named in the files under ``paths``, in path and line order."""
    found: list[Usage] = []
    for path in _files(paths):
        try:  # a regular file only: a FIFO named like a template would block for ever
            text = read_bounded(path, MAX_SOURCE_BYTES, follow=True).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # not a text file this reads
        name = str(path)
        line_of = _line_numbers(text)
        here = _flags_setting(name, text, line_of)
        if path.suffix == ".py":
            here += _python(name, text)
        elif path.suffix in TEMPLATE_SUFFIXES:
            here += _template(name, text, line_of)
        found += sorted(here, key=lambda usage: usage.line)
    return found


def _line_numbers(text: str) -> Callable[[int], int]:
    """The line number of an offset in ``text`` (a binary search: linear in all)."""
    newlines = [match.start() for match in re.finditer("\n", text)]
    return lambda offset: bisect.bisect_left(newlines, offset) + 1


def problems(usages: Iterable[Usage], settings: Mapping[str, Any]) -> list[Problem]:
    """Unknown flags, unknown variables, and defaults whose type differs from VWO's."""
    variables = flag_variables(settings)
    metrics = sorted(metric_names(settings))
    out = []
    for usage in usages:
        if usage.event:
            if usage.flag not in metrics:
                hint = _did_you_mean(usage.flag, metrics)
                out.append(Problem(usage, f"no flag measures the event {usage.flag!r}{hint}"))
            continue
        known = variables.get(usage.flag)
        if known is None:
            hint = _did_you_mean(usage.flag, variables)
            out.append(Problem(usage, f"unknown flag {usage.flag!r}{hint}"))
            continue
        if usage.variable is None:
            continue
        kind = known.get(usage.variable)
        if kind is None:
            hint = _did_you_mean(usage.variable, known)
            message = f"flag {usage.flag!r} has no variable {usage.variable!r}{hint}"
            out.append(Problem(usage, message))
            continue
        default = usage.default
        if default is NO_DEFAULT or default is None or kind not in VARIABLE_TYPES:
            continue
        allowed = VARIABLE_TYPES[kind]
        if (isinstance(default, bool) and bool not in allowed) or not isinstance(default, allowed):
            message = (
                f"the default of {usage.flag}.{usage.variable} is {type(default).__name__} "
                f"({default!r}); VWO's variable is {kind}"
            )
            out.append(Problem(usage, message))
    return out


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``names`` (or one it begins), else ``""``."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=1)
    close = close or [n for n in names if n.startswith(name) or name.startswith(n)][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def flag_variables(settings: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Each flag's variables and their VWO types, from the settings."""
    flags: dict[str, dict[str, str]] = {}
    for feature in settings.get("features") or []:
        if isinstance(feature, dict) and isinstance(feature.get("key"), str):
            flags.setdefault(
                feature["key"],
                {
                    str(v.get("key")): str(v.get("type", "")).lower()
                    for v in feature.get("variables") or []
                    if isinstance(v, dict)
                },
            )
    return flags


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for root in map(Path, paths):
        try:  # a mistyped path must not make a CI step a no-op
            root.stat()
        except OSError as error:
            raise Unreadable(f"cannot read {str(root)!r}: {error.strerror or error}") from None
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise Unreadable(f"cannot read {str(root)!r}: not a file or a directory")
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
            for name in sorted(names):
                path = Path(directory, name)
                if (
                    path.suffix in TEMPLATE_SUFFIXES
                    or path.suffix in (".py", *CONFIG_SUFFIXES)
                    or name in CONFIG_NAMES
                    or name.startswith(".env")
                ):
                    yield path


def _python(path: str, text: str) -> list[Usage]:
    try:
        tree = ast.parse(text)
        return _python_usages(path, tree)
    except (SyntaxError, ValueError):
        return []
    except (RecursionError, MemoryError):
        raise Unreadable(f"{path}: nested too deeply to read") from None


def _python_usages(path: str, tree: ast.AST) -> list[Usage]:
    found: list[Usage] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found += _call(path, node)
        elif isinstance(node, ast.Subscript) and _names_flags(node.value):
            key = _string(node.slice)
            if key is not None:
                found.append(Usage(path, node.lineno, key))
        elif isinstance(node, ast.Assign):
            found += _assignment(path, node)
    return found


def _call(path: str, node: ast.Call) -> list[Usage]:
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    args = node.args
    first = _string(args[0]) if args else None
    if name in GUARDS and first is not None:
        return [Usage(path, node.lineno, first)]
    if name == "override_flags" and args and isinstance(args[0], ast.Dict):
        keys = [_string(k) for k in args[0].keys if k is not None]
        return [Usage(path, node.lineno, k) for k in keys if k is not None]
    if not isinstance(function, ast.Attribute) or first is None:
        return []
    if name == "set" and "overrides" in ast.unparse(function.value):
        return [Usage(path, node.lineno, first), *_override_variables(path, node, first)]
    if not _names_flags(function.value):
        return []
    if name == "track":
        return [Usage(path, node.lineno, first, event=True)]
    if name == "enabled":
        return [Usage(path, node.lineno, first)]
    if name == "variable" and len(args) >= 2 and (variable := _string(args[1])) is not None:
        default = _literal(args[2]) if len(args) >= 3 else NO_DEFAULT
        return [Usage(path, node.lineno, first, variable, default)]
    return []


def _override_variables(path: str, node: ast.Call, key: str) -> list[Usage]:
    """``flag_overrides.set("key", variables={"name": value})``: each variable, its value as
    the default whose type is checked."""
    found = []
    for keyword in node.keywords:
        if keyword.arg == "variables" and isinstance(keyword.value, ast.Dict):
            for name_node, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                name = _string(name_node) if name_node is not None else None
                if name is not None:
                    found.append(Usage(path, node.lineno, key, name, _literal(value)))
    return found


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_DEFAULT  # not a literal: its type is not known here


def _assignment(path: str, node: ast.Assign) -> list[Usage]:
    targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
    value = node.value
    if "requires_flag_key" in targets and (key := _string(value)) is not None:
        return [Usage(path, node.lineno, key)]
    found: list[Usage] = []
    if "VWO_HEAP" in targets and isinstance(value, ast.Dict):
        for key_node, item in zip(value.keys, value.values, strict=True):
            named = key_node is not None and _string(key_node) in ("flags", "client_flags")
            if named and isinstance(item, (ast.Tuple, ast.List)):
                keys = [_string(element) for element in item.elts]
                found += [Usage(path, node.lineno, k) for k in keys if k is not None]
    return found


def _names_flags(node: ast.AST) -> bool:
    """``flags``, ``g.flags``, ``request.state.flags``, ``get_flags()``: a request's flags."""
    return "flags" in ast.unparse(node).lower().replace("_flags()", "flags")


def _string(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _template(path: str, text: str, line_of: Callable[[int], int]) -> list[Usage]:
    found: list[Usage] = []
    for pattern in (_JINJA, _JINJA_ITEM, _DJANGO_FLAG, _DJANGO_VARIABLE):
        for match in pattern.finditer(text):
            line = line_of(match.start())
            groups = match.groupdict()
            variable = groups.get("variable")
            if variable is None:
                found.append(Usage(path, line, groups["key"]))
                continue
            default = (groups.get("default") or "").split(" as ")[0].strip()
            found.append(Usage(path, line, groups["key"], variable, _template_literal(default)))
    return found


def _template_literal(source: str) -> Any:
    """A template's default as a Python value, when it is a literal (Jinja's ``true`` too)."""
    if not source:
        return NO_DEFAULT
    source = {"true": "True", "false": "False", "none": "None"}.get(source.strip(), source)
    try:
        return ast.literal_eval(source.strip())
    except (ValueError, SyntaxError):
        return NO_DEFAULT


def _flags_setting(path: str, text: str, line_of: Callable[[int], int]) -> list[Usage]:
    found = []
    for match in _FLAGS_SETTING.finditer(text):
        line = line_of(match.start())
        for key in match.group(1).split(","):
            if key.strip():
                found.append(Usage(path, line, key.strip()))
    return found
