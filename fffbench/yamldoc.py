"""YAML documents with line numbers, read so that no input can crash or exhaust the reader.

A suite is data, so only plain YAML is accepted: mappings with scalar keys, sequences, strings,
numbers, booleans and null. Everything else is refused in one line naming the file and the line:
tags (``!!python/object``, ``!custom``, ``!!binary``...), merge keys (``<<``), complex keys, files
over :data:`MAX_BYTES`, nesting deeper than :data:`MAX_DEPTH`, bytes that are not UTF-8. Anchors and
aliases are allowed, but the document is expanded under a budget of :data:`MAX_NODES` nodes, so
an alias bomb (a few hundred bytes that expand to billions of nodes) is refused in microseconds
instead of exhausting memory.
"""
from __future__ import annotations

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
_PLAIN_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null")}
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class DocumentError(ValueError):
    """``str(e)`` is ``file:line: message``."""


def _line_of_offset(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


class Doc:
    """Plain Python values of a YAML document plus the line of every key and value."""

    def __init__(self, path: str, data: bytes | str):
        self.path = path
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if len(data) > MAX_BYTES:
            raise DocumentError(f"{path}:1: the file is {len(data)} bytes; a suite may be at most {MAX_BYTES}")
        try:
            self.text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DocumentError(f"{path}:{_line_of_offset(data, e.start)}: not UTF-8 text (byte 0x{data[e.start]:02x} "
                                f"at offset {e.start}); save the file as UTF-8") from None
        try:
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except RecursionError:
            raise DocumentError(f"{path}:1: nesting too deep (a suite nests at most {MAX_DEPTH} levels)") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            line = mark.line + 1 if mark else 1
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
            if ctx and cmark and cmark.line + 1 != line:
                problem += f" ({ctx} started on line {cmark.line + 1})"
            raise DocumentError(f"{path}:{line}: invalid YAML: {problem}") from None
        self.lines: dict[tuple, int] = {}
        self._nodes = 0
        self.data = self._convert(node, (), 0) if node is not None else None

    def _fail_node(self, node, msg: str):
        raise DocumentError(f"{self.path}:{node.start_mark.line + 1}: {msg}")

    def _convert(self, node, where: tuple, depth: int):
        self._nodes += 1
        if self._nodes > MAX_NODES:
            self._fail_node(node, f"the document expands to more than {MAX_NODES} values (aliases of aliases?); "
                                  "a suite needs far fewer")
        if depth > MAX_DEPTH:
            self._fail_node(node, f"nesting deeper than {MAX_DEPTH} levels")
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self._fail_node(node, f"tag {node.tag!r} is not supported; a suite holds plain mappings, lists and values")
            out = {}
            for k, v in node.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    self._fail_node(k, "merge keys ('<<') are not supported; write the keys out")
                if not isinstance(k, yaml.ScalarNode):
                    self._fail_node(k, "a key must be a plain value, not a mapping or a list")
                key = self._scalar(k)
                if isinstance(key, (list, dict)) or not isinstance(key, (str, int, float, bool)) and key is not None:
                    self._fail_node(k, f"a key must be a plain value, got {type(key).__name__}")
                if key in out:
                    self._fail_node(k, f"key {key!r} appears twice")
                self.lines[where + (key, "<key>")] = k.start_mark.line + 1
                out[key] = self._convert(v, where + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._fail_node(node, f"tag {node.tag!r} is not supported; a suite holds plain mappings, lists and values")
            return [self._convert(v, where + (i,), depth + 1) for i, v in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node):
        if node.tag not in _PLAIN_TAGS:
            self._fail_node(node, f"tag {node.tag!r} is not supported; write a plain value (string, number, "
                                  "true/false or null)")
        try:
            return yaml.constructor.SafeConstructor().construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as e:
            self._fail_node(node, f"cannot read the value {node.value!r}: {str(e).splitlines()[0]}")

    def line(self, where: tuple, key: bool = False) -> int:
        where = tuple(where)
        while where:
            if key and where + ("<key>",) in self.lines:
                return self.lines[where + ("<key>",)]
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return self.lines.get((), 1)

    def fail(self, where, msg: str, key: bool = False):
        raise DocumentError(f"{self.path}:{self.line(where, key)}: {msg}")
