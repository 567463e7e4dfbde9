"""Reading a design file's text into a table of fields: strict TOML or YAML, small UTF-8 text only.

A file that is not a table of fields (syntax error, binary bytes, YAML tags, a key given twice, deep nesting,
a huge file) is a `ConfigError` naming the file and what is wrong, never a traceback.
"""
from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

import yaml

from .errors import ConfigError
from .fields import shown

MAX_DESIGN_FILE_BYTES = 64 * 1024  # a design file is well under 2 KiB; this bounds parse time and memory
SUFFIXES = (".toml", ".yaml", ".yml")


class _StrictYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader that refuses a key given twice in one mapping (safe_load keeps the last).

    libyaml's parser is used where PyYAML has it: it is fast and limits nesting depth, where the pure-Python
    scanner takes seconds on a few thousand nested brackets."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor refuses it with its position
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"found the key {shown(key)} twice",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def file_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"design file {path}", problem)


def read_design_table(path: Path) -> Mapping:
    """The top-level table of a .toml/.yaml/.yml design file (not empty)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES and not path.is_dir():
        raise file_error(path, "use a .toml, .yaml or .yml file")
    text = _read_text(path)
    raw = _parse_toml(path, text) if suffix == ".toml" else _parse_yaml(path, text)
    if raw is None or raw == {}:
        raise file_error(path, "holds no design fields; write at least one, e.g. name = \"my-cell\"")
    if not isinstance(raw, Mapping):
        raise file_error(path, f"must hold a table of design fields (name = ..., vdd_v = ...), not a "
                               f"{type(raw).__name__}: {shown(raw)}")
    return raw


def _read_text(path: Path) -> str:
    """The file's text: a regular, readable, small UTF-8 text file."""
    if path.is_dir():
        raise file_error(path, "is a folder; give a .toml, .yaml or .yml design file")
    if not path.is_file():
        raise file_error(path, "is not a regular file (a device or pipe); give a .toml, .yaml or .yml design file")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DESIGN_FILE_BYTES + 1)
    except OSError as exc:
        raise file_error(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_DESIGN_FILE_BYTES:
        raise file_error(path, f"is larger than {MAX_DESIGN_FILE_BYTES // 1024} KiB; a design file is a short "
                               "list of fields")
    nul_at = data.find(b"\0")
    if nul_at >= 0:
        raise file_error(path, f"is a binary file (NUL byte at offset {nul_at}); a design file is UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise file_error(path, f"is not UTF-8 text (invalid byte at offset {exc.start})") from None


def _parse_toml(path: Path, text: str):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise file_error(path, f"is not valid TOML: {exc}; write `field = value` lines and [device] tables, "
                               "each key once") from None
    except RecursionError:
        raise file_error(path, "is nested too deeply to be a design file") from None
    except ValueError as exc:  # a value the TOML reader cannot convert, e.g. an integer of 5000 digits
        raise file_error(path, f"holds a value that cannot be read: {exc}") from None


def _parse_yaml(path: Path, text: str):
    try:
        return yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.constructor.ConstructorError as exc:
        where = _yaml_position(exc)
        if exc.problem and "could not determine a constructor" in exc.problem:
            raise file_error(path, f"uses a YAML tag that is not allowed{where}: {exc.problem}; a design file "
                                   "holds only plain values (numbers, text), lists and mappings") from None
        raise file_error(path, f"is not a valid design mapping{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        if "nesting depth" in problem:
            raise file_error(path, f"is nested too deeply to be a design file{_yaml_position(exc)}") from None
        raise file_error(path, f"is not valid YAML{_yaml_position(exc)}: {problem}") from None
    except RecursionError:
        raise file_error(path, "is nested too deeply to be a design file") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2001-13-45, `!!int abc`
        raise file_error(path, f"holds a value that cannot be read: {exc}") from None


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
