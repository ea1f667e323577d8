"""Reading user files safely: regular files only, YAML within limits, errors that stay one short line.

Why: results trees, study files and provenance records are user data. A FIFO named like a result would
block a plain ``open`` forever, a YAML alias bomb expands a few lines into billions of nodes, deep nesting
overflows the parser's recursion, and an error message that embeds a user value can be megabytes long.
Everything here is a pure function of its input (and of the file system for ``read_regular``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import NlwuError

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "NotRegularFile",
    "YamlLimitError",
    "check_regular",
    "load_yaml",
    "name_problem",
    "os_error_text",
    "read_regular",
    "short",
]

#: limits of every YAML file this project reads (study files, provenance records): far above any real one
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (with how much was cut): error messages stay one short line
    whatever a user put in a file or on the command line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


def os_error_text(err: OSError) -> str:
    """``No space left on device (ENOSPC)``: the cause of an OSError, without its traceback or path."""
    cause = err.strerror or str(err) or type(err).__name__
    if isinstance(err, NotRegularFile):
        return cause  # "a FIFO, not a regular file": the errno would add nothing
    name = errno.errorcode.get(err.errno or 0)
    return f"{cause} ({name})" if name else cause


def _limit(path: Path, name: str, default: int) -> int:
    probe = path
    while True:
        try:
            return int(os.pathconf(probe, name))
        except (OSError, ValueError):
            if probe.parent == probe:
                return default
            probe = probe.parent


def name_problem(path: str | Path) -> str | None:
    """Why no file system here can hold ``path`` (a component longer than NAME_MAX bytes, or the whole longer
    than PATH_MAX), or None. Checked on the name alone, before any ``stat`` could fail with ENAMETOOLONG."""
    path = Path(path)
    anchor = Path(os.path.abspath(path)).anchor or "/"
    name_max = _limit(Path(anchor), "PC_NAME_MAX", 255)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            return (
                f"the name {short(part, 40)} in it is {size} bytes, longer than the file system allows "
                f"({name_max}, ENAMETOOLONG)"
            )
    size = len(os.fsencode(os.path.abspath(path)))
    path_max = _limit(Path(anchor), "PC_PATH_MAX", 4096)
    if size >= path_max:
        return f"the path is {size} bytes, longer than the file system allows ({path_max}, ENAMETOOLONG)"
    return None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFile(NlwuError, OSError):
    """The path is a FIFO, device, socket, folder, symlink loop or dangling link: never opened for reading."""


def check_regular(path: str | Path) -> os.stat_result:
    """The path's stat (links followed) if it is a regular file; NotRegularFile (with the reason) otherwise."""
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "symlink loop, not followed") from None
        if err.errno == errno.ENOENT and os.path.islink(path):
            raise NotRegularFile(errno.ENOENT, f"dangling symlink (to {short(os.readlink(path), 80)})") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file")
    return info


def read_regular(path: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file. Never blocks: the type is checked with ``os.stat`` before opening, and
    the file is opened with O_NONBLOCK and checked again with ``fstat`` (a FIFO swapped in between is
    refused too). ``max_bytes``: ValueError (naming the size) when the file is larger."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ValueError(f"{info.st_size} bytes, above the limit of {max_bytes}")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# YAML within limits
# ---------------------------------------------------------------------------------------------------------
class YamlLimitError(NlwuError, ValueError):
    """A YAML document beyond one of the limits (bytes, nodes after alias expansion, nesting depth)."""


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _measure(root, max_nodes: int, max_depth: int) -> None:
    """YamlLimitError when the document, with every alias expanded, has more than ``max_nodes`` nodes or is
    nested deeper than ``max_depth``, or an alias refers to a node that contains it. Iterative and memoised:
    a billion-node alias bomb is measured in as many steps as it has written nodes."""
    memo: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes = [memo[id(c)] for c in _children(node)]
            size = 1 + sum(s for s, _ in sizes)
            depth = 1 + max((d for _, d in sizes), default=0)
            if size > max_nodes:
                raise YamlLimitError(f"more than {max_nodes} nodes once aliases are expanded (an alias bomb?)")
            if depth > max_depth:
                raise YamlLimitError(f"nested deeper than {max_depth} levels once aliases are expanded")
            memo[key] = (size, depth)
            continue
        if key in memo:
            continue
        if key in on_path:
            raise YamlLimitError("an alias refers to a node that contains it (a recursive structure)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in memo)


def _depth_bound(text: str) -> int:
    """An upper bound on the nesting depth of a YAML text, from its characters alone (no parsing): a block
    collection nested in another starts on a later line indented at least as far (at most two levels per
    indentation column: a mapping and its indentless sequence) or on the same line after an indicator
    ('-', '?', ':'); a flow collection opens with '[' or '{'. Over-estimates freely; never under-estimates."""
    indent = indicators = 0
    for line in re.split("[\n\r\x85\u2028\u2029]", text):
        indent = max(indent, len(line) - len(line.lstrip(" ")))
        indicators = max(indicators, line.count("-") + line.count("?") + line.count(":"))
    return 2 * (indent + 1) + indicators + text.count("[") + text.count("{") + 1


def _libyaml_text(text: str | bytes, max_depth: int) -> str | None:
    """``text`` as a str where libyaml may parse it: libyaml installed, UTF-8, no tab, and a ``_depth_bound``
    within ``max_depth`` (so the C composer's recursion stays shallow); else None (the pure path reads it)."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    try:
        decoded = text if isinstance(text, str) else text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\t" in decoded or _depth_bound(decoded) > max_depth:
        return None
    return decoded


def _construct_within_limits(loader, max_nodes: int, max_depth: int) -> Any:
    """Compose the document with ``loader``, measure it with every alias expanded (``_measure``) and only then
    construct it; the loader is disposed of whatever happens. Shared by the C (libyaml) and the pure path."""
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, max_nodes, max_depth)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(
    text: str | bytes,
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_nodes: int = MAX_YAML_NODES,
    max_depth: int = MAX_YAML_DEPTH,
) -> Any:
    """``yaml.safe_load`` within limits: YamlLimitError (naming the limit) for a text over ``max_bytes``, a
    nesting deeper than ``max_depth`` (checked while composing, before the parser's recursion can overflow) or
    more than ``max_nodes`` nodes after alias expansion (checked before anything is constructed). Other
    malformed YAML raises ``yaml.YAMLError`` as ``safe_load`` does. Parsed by libyaml (C, ~4x faster) where a
    character count bounds the nesting within ``max_depth`` (``_depth_bound``), else by the pure-Python
    composer; the values and the limits are the same either way."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise YamlLimitError(f"{size} bytes, above the limit of {max_bytes}")
    fast = _libyaml_text(text, max_depth)
    if fast is not None:
        try:
            return _construct_within_limits(yaml.CSafeLoader(fast), max_nodes, max_depth)
        except yaml.YAMLError:
            pass  # malformed: the pure path below raises its own (canonical) error for it

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            try:
                if self.depth > max_depth:
                    mark = self.peek_event().start_mark
                    raise YamlLimitError(f"nested deeper than {max_depth} levels (line {mark.line + 1})")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return _construct_within_limits(_Loader(text), max_nodes, max_depth)
    except RecursionError:
        raise YamlLimitError(f"nested too deeply to parse (limit {max_depth} levels)") from None
