"""Reading a settings file: YAML 1.2 values and their line numbers in one parse (ruamel.yaml),
refusing what is not plain data (duplicate keys, tags such as ``!!python/object``), what is too
big to be a settings file, and aliases that expand beyond reason; a syntax error names its line
and column."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from workers.errors import DorBenchError, NotFoundError

#: Where each value of a file is: ``("methods", 1, "name")`` -> its 1-based line.
Lines = dict[tuple[str | int, ...], int]

#: A settings file is a few kilobytes; above this it is the wrong file (and parsing it would be slow).
MAX_BYTES = 1_000_000
#: Values a file may expand to once its aliases are followed (a "billion laughs" file expands to 10^9).
MAX_VALUES = 100_000


def read_yaml(path: Path, kind: str, example: str) -> tuple[Any, Lines]:
    """The plain data of a YAML settings file (dicts, lists, scalars) and the line of each value.

    Raises:
        NotFoundError: the file is not there. DorBenchError: it is too big, not UTF-8, not valid
        YAML, or not plain data.
    """
    if not path.is_file():
        raise NotFoundError(
            f"{kind} file '{path}' " + ("is a folder, not a file." if path.is_dir() else "does not exist."),
            f"check the path; {example}.",
        )
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DorBenchError(
            f"{kind} file '{path}' is {size / 1e6:.1f} MB; a settings file is at most {MAX_BYTES / 1e6:.0f} MB.",
            f"check that this is the settings file you meant; {example}.",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DorBenchError(
            f"{kind} file '{path}' is not UTF-8 text (byte {err.start} cannot be decoded; is it a binary file?).",
            f"pass a YAML settings file; {example}.",
        ) from None
    return parse_yaml(text, f"{kind} file '{path}'")


def parse_yaml(text: str, what: str) -> tuple[Any, Lines]:
    """``text`` as plain data and its lines; ``what`` names it in errors ("Benchmark file 'x.yaml'")."""
    try:
        document = _yaml().load(text)
    except DuplicateKeyError as err:
        raise _duplicate_key(err, text, what) from None
    except YAMLError as err:
        raise _syntax_error(err, text, what) from None
    lines: Lines = {(): document.lc.line + 1} if isinstance(document, (CommentedMap, CommentedSeq)) else {}
    return _plain(document, (), lines, [0], what), lines


def parse_value(text: str, what: str) -> Any:
    """One value written on the command line (``[4, 8]``, ``1e-3``, ``/data``), read as in a file."""
    return parse_yaml(text, what)[0]


def _yaml() -> YAML:
    reader = YAML(typ="rt")
    reader.allow_duplicate_keys = False
    return reader


def _plain(value: Any, loc: tuple[str | int, ...], lines: Lines, count: list[int], what: str) -> Any:
    """The round-trip document as plain Python, recording each value's line; aliases are copied
    out, within ``MAX_VALUES``."""
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise DorBenchError(
            f"{what} expands to more than {MAX_VALUES:,} values (YAML aliases repeating aliases?).",
            "write the settings out plainly; a settings file needs no more than a few hundred values.",
        )
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, TaggedScalar) or tag is not None:
        where = f" at {_dotted(loc)}" if loc else ""
        raise DorBenchError(
            f"{what} uses the YAML tag '{tag}'{where}; settings files hold plain values only.",
            "remove the tag (settings never need Python objects or custom types).",
        )
    if isinstance(value, CommentedMap):
        out = {}
        for key, item in value.items():
            if key in value.lc.data:
                lines[(*loc, key)] = value.lc.value(key)[0] + 1
            out[key] = _plain(item, (*loc, key), lines, count, what)
        return out
    if isinstance(value, CommentedSeq):
        items = []
        for index, item in enumerate(value):
            if index in value.lc.data:
                lines[(*loc, index)] = value.lc.item(index)[0] + 1
            items.append(_plain(item, (*loc, index), lines, count, what))
        return items
    if isinstance(value, bool) or value is None or isinstance(value, datetime.date):
        return value
    for plain in (int, float, str):  # ruamel's scalar subclasses keep formatting we do not want
        if isinstance(value, plain):
            return plain(value)
    return value


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def _syntax_error(err: YAMLError, text: str, what: str) -> DorBenchError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{context}: {problem}" if context else problem
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        detail = f"{context} (from line {context_mark.line + 1}): {problem}"
    return _invalid(what, f"{where}: {detail}", mark, text)


def _duplicate_key(err: DuplicateKeyError, text: str, what: str) -> DorBenchError:
    """ruamel names the mapping's start; the message names the first occurrence of the key."""
    mark = err.problem_mark
    key = _scalar_at(_yaml().compose(text), mark.line, mark.column)
    first = _first_key(_yaml().compose(text), key, mark.line) if key is not None else None
    detail = f"found the key '{key}' twice" + (f" (first on line {first})" if first else "")
    return _invalid(what, f" at line {mark.line + 1}, column {mark.column + 1}: {detail}", mark, text)


def _scalar_at(node: Node | None, line: int, column: int) -> str | None:
    for key, _ in _mappings(node):
        if key.start_mark.line == line and key.start_mark.column == column:
            return str(key.value)
    return None


def _first_key(node: Node | None, key: str, line: int) -> int | None:
    lines = [k.start_mark.line for k, _ in _mappings(node) if str(k.value) == key and k.start_mark.line < line]
    return max(lines) + 1 if lines else None


def _mappings(node: Node | None) -> list[tuple[Node, Node]]:
    """Every (key, value) node pair of the tree."""
    pairs: list[tuple[Node, Node]] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, MappingNode):
            pairs.extend(current.value)
            stack.extend(v for _, v in current.value)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
    return pairs


def _invalid(what: str, detail: str, mark: Any, text: str) -> DorBenchError:
    snippet = ""
    lines = text.splitlines()
    if mark is not None and 0 <= mark.line < len(lines):
        snippet = (
            f"\n    {mark.line + 1} | {lines[mark.line]}\n      {' ' * len(str(mark.line + 1))}"
            f"{' ' * (mark.column + 1)}^"
        )
    return DorBenchError(
        f"{what} is not valid YAML{detail}.{snippet}",
        "fix the YAML there (indentation, a missing ':' or an unclosed quote or bracket are the usual causes).",
    )


def yaml_path(loc: tuple[str | int, ...], raw: Any) -> str:
    """``('methods', 1, 'name')`` -> ``methods[1].name``; an index into a scalar that stood for a
    one-value list is left out (``dor.lam``, not ``dor.lam[0]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            if isinstance(raw, list):
                out += f"[{part}]"
                raw = raw[part] if part < len(raw) else None
            elif part != 0:
                out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
            raw = raw.get(part) if isinstance(raw, dict) else None
    return out or "(top level)"


def line_of(loc: tuple[str | int, ...], lines: Lines | None) -> int | None:
    """The line of the deepest value along ``loc`` that the file holds (an unknown key: the key's)."""
    if not lines:
        return None
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
