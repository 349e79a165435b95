"""The one YAML loader for what users hand slidebank: run configs, ``key=value`` overrides,
signature files (issue 24).

``yaml.safe_load`` builds no objects but bounds no work: an alias is one node in the file
and a whole subtree in the data, so a few hundred bytes of nested anchors (a "billion
laughs") become gigabytes as soon as anything walks the result (``json.dumps``, a deep
copy, a key check). :class:`BoundedLoader` is a ``SafeLoader`` that counts what every
alias expands to and how deep the data nests, and stops at the first node past a cap,
with a one-line :class:`YamlError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra.errors import ConfigError

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "BoundedLoader",
    "YamlError",
    "load_yaml",
    "load_yaml_file",
]

#: nodes all aliases together may stand for; a real config reuses a block or two
MAX_ALIAS_NODES = 100_000
#: nesting of the data, aliases expanded (deep enough for any config, far below recursion limits)
MAX_DEPTH = 64
#: a config or signature file larger than this is not a config
MAX_FILE_BYTES = 16 << 20


class YamlError(ConfigError):
    """A YAML document is invalid or would expand past the caps; ``source`` and ``line``
    (1-based, None when unknown) say where."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.problem))


class _Refused(yaml.MarkedYAMLError):
    pass


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses alias expansion past :data:`MAX_ALIAS_NODES` nodes,
    recursive aliases, and data nested past :data:`MAX_DEPTH`, while composing (before any
    object is built)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        #: id(node) -> (nodes, depth) of a finished node, aliases counted in full
        self._measured: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self._count_alias(node, mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _count_alias(self, node: Any, mark: Any) -> None:
        if node.end_mark is None:  # still being composed: the alias points into itself
            raise _Refused(None, None, "recursive alias (a node containing itself)", mark)
        nodes, depth = self._measure(node)
        self._expanded += nodes
        if self._expanded > MAX_ALIAS_NODES:
            raise _Refused(
                None,
                None,
                f"aliases expand past {MAX_ALIAS_NODES:,} nodes (an alias "
                "bomb?); write the values out instead of aliasing them",
                mark,
            )
        if self._depth + depth > MAX_DEPTH:
            raise _Refused(
                None, None, f"aliases nest the data deeper than {MAX_DEPTH} levels", mark
            )

    def _measure(self, node: Any) -> tuple[int, int]:
        # Nodes reached through earlier aliases are measured already, so the recursion only
        # walks what is written out here: at most MAX_DEPTH deep.
        known = self._measured.get(id(node))
        if known is not None:
            return known
        children: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        sizes = [self._measure(child) for child in children]
        result = (1 + sum(n for n, _ in sizes), 1 + max((d for _, d in sizes), default=0))
        self._measured[id(node)] = result
        return result


def load_yaml(text: str, source: str) -> Any:
    """One YAML document from ``text`` (``source`` names it in errors), with bounded work."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlError(
            source, line, _one_line(exc.problem or exc.context or "invalid YAML")
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlError(source, None, _one_line(str(exc))) from exc
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """:func:`load_yaml` of a local file, refused past :data:`MAX_FILE_BYTES`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise YamlError(str(path), None, f"larger than {MAX_FILE_BYTES >> 20} MiB; not a config")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlError(str(path), None, f"not UTF-8 text (byte {exc.start})") from exc
    return load_yaml(text, str(path))


def _one_line(text: str) -> str:
    return " ".join(text.split())
