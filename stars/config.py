"""Typed configuration: frozen dataclasses, YAML files and dotted command-line overrides.

Every concern (data, model, training, ...) owns one frozen dataclass. A job's config is a
dataclass whose fields are those concern configs. ``load_config`` builds it from defaults, an
optional YAML file and ``key.sub=value`` overrides, in that order; any key that the dataclass
does not declare is an error naming the key and the keys that are valid at that level.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override that does not fit the typed config."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int -> float,
    list -> tuple, str -> Path); raise ConfigError naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = list(value)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            out = [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(items)]
        elif origin is tuple and args:
            if len(items) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(items)}")
            out = [
                _coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(items, args, strict=True))
            ]
        else:
            inner = args[0] if args else Any
            out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        return Path(value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) nested mapping; defaults fill the rest."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        at = f" in '{prefix}'" if prefix else ""
        raise ConfigError(
            f"unknown config key '{_join(prefix, unknown[0])}'{at}; valid keys: " + ", ".join(names)
        )
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from err


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists, Paths strings) suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{'data.num_frames': 120, ...}`` for logging as parameters."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(_join(prefix, k), x)
        else:
            out[prefix] = v

    walk("", to_dict(cfg))
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'data.num_frames=120'`` -> (['data', 'num_frames'], 120); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), value


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _check_override_path(cls: type, path: list[str]) -> None:
    """Name the first unknown key of a dotted override before any value is converted."""
    current: Any = cls
    for depth, part in enumerate(path):
        if not dataclasses.is_dataclass(current):
            done = ".".join(path[:depth])
            raise ConfigError(f"'{done}' is a value, not a section; cannot set '{'.'.join(path)}'")
        names = [f.name for f in dataclasses.fields(current)]
        if part not in names:
            where = ".".join(path[:depth]) or "top level"
            raise ConfigError(
                f"unknown config key '{'.'.join(path[: depth + 1])}' "
                f"({where}); valid keys: {', '.join(names)}"
            )
        current = _hints(current)[part]
        if typing.get_origin(current) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(current) if dataclasses.is_dataclass(a)]
            current = inner[0] if inner else current


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: T | None = None,
) -> T:
    """Resolve a config: ``base`` (or defaults), then the YAML file at ``path``, then overrides.

    Raises:
        ConfigError: unknown keys, wrong types, malformed overrides; the message names the key.
    """
    tree = to_dict(base) if base is not None else {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = _deep_merge(tree, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        _check_override_path(cls, keys)
        _set_path(tree, keys, value)
    try:
        return from_dict(cls, tree)
    except ConfigError as err:
        if path is not None:
            raise ConfigError(f"{path}: {err}") from err
        raise


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` with type checking of the new values."""
    hints = _hints(type(cfg))
    checked = {k: _coerce(v, hints[k], k) if k in hints else v for k, v in changes.items()}
    return dataclasses.replace(cfg, **checked)  # type: ignore[type-var]


def dump_yaml(cfg: Any, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def dump_json(cfg: Any, path: str | Path | None = None) -> str:
    text = json.dumps(to_dict(cfg), indent=2)
    if path is not None:
        Path(path).write_text(text)
    return text


def add_overrides_argument(
    parser: Any, flag: str = "--set", dest: str = "overrides", help: str = ""
) -> None:
    """A repeatable ``--set KEY=VALUE`` (dotted config override) on an argparse parser."""
    parser.add_argument(
        flag,
        dest=dest,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help or "dotted config override, repeatable",
    )
