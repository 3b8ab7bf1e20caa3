"""Reading a settings file: YAML with its line numbers, refusing what is not plain data (duplicate
keys, Python tags), and saying where a syntax error is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from workers.errors import DorBenchError, NotFoundError


class Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-3`` as a float (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key '{key}' twice (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path, kind: str, example: str) -> tuple[Any, yaml.Node | None]:
    """The data of a YAML settings file and its composed node tree (for line numbers).

    Raises:
        NotFoundError: the file is not there. DorBenchError: it is not valid YAML.
    """
    if not path.is_file():
        raise NotFoundError(
            f"{kind} file '{path}' does not exist{' (it is a folder)' if path.is_dir() else ''}.",
            f"check the path; {example}.",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DorBenchError(
            f"{kind} file '{path}' is not UTF-8 text (byte {err.start} cannot be decoded; is it a binary file?).",
            f"pass a YAML settings file; {example}.",
        ) from None
    try:
        data = yaml.load(text, Loader=Loader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise yaml_error(path, err, kind) from None
    return data, node


def yaml_error(path: Path, err: yaml.YAMLError, kind: str = "Benchmark") -> DorBenchError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{context}: {problem}" if context and "twice" not in problem else problem
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        detail = f"{context} (from line {context_mark.line + 1}): {problem}"
    snippet = ""
    if mark is not None and mark.buffer is not None:
        lines = mark.buffer.rstrip("\0").splitlines()
        if 0 <= mark.line < len(lines):
            snippet = (
                f"\n    {mark.line + 1} | {lines[mark.line]}\n      {' ' * len(str(mark.line + 1))}"
                f"{' ' * (mark.column + 1)}^"
            )
    return DorBenchError(
        f"{kind} file '{path}' is not valid YAML{where}: {detail}.{snippet}",
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


def line_of(loc: tuple[str | int, ...], node: yaml.Node | None) -> int | None:
    """The 1-based line of the deepest YAML node along ``loc``."""
    if node is None:
        return None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:  # an unknown key points at the key itself
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                child = key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1
