"""Typed configuration: frozen dataclasses, YAML files and dotted command-line overrides.

Every concern (data, model, training, ...) owns one frozen dataclass. A job's config is a
dataclass whose fields are those concern configs. ``load_layers`` builds it from defaults, an
optional YAML file and ``key.sub=value`` overrides, in that order; any key that the dataclass
does not declare is an error naming the key and the keys that are valid at that level.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from stars.config_ranges import problem as range_problem
from stars.errors import StarsError

T = TypeVar("T")


class ConfigError(StarsError):
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
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
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


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ConfigError naming ``where``)."""
    return _coerce(value, tp, where)


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
    for key, value in kwargs.items():
        if text := range_problem(cls.__name__, key, value, _join(prefix, key)):
            raise ConfigError(text)
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
            where = f"section '{'.'.join(path[:depth])}'" if depth else "the top level"
            raise ConfigError(
                f"unknown config key '{'.'.join(path)}': {where} has no '{part}'; "
                f"valid keys there: {', '.join(names)}"
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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return dict(loaded)


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in tree.items():
        key = _join(prefix, str(k))
        if isinstance(v, Mapping) and v:
            keys |= _leaf_keys(v, key)
        else:
            keys.add(key)
    return keys


@dataclass(frozen=True)
class Layered(Generic[T]):
    """A config resolved from layers, and the dotted keys the user set explicitly (in the
    YAML file, with ``--set`` or through a flag); preset and default values are not."""

    config: T
    explicit: frozenset[str]

    def was_set(self, key: str) -> bool:
        """True when ``key`` (or a key inside it, or the section holding it) was set."""
        return any(
            k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in self.explicit
        )


# Every job's file uses these top-level sections (each job reads the ones it has): one layout.
FILE_SECTIONS = ("stage1", "stage2", "eval", "tracking", "sweep")


def own_section(cls: type, section: str) -> type | None:
    """The dataclass of ``cls``'s field named ``section`` (``Stage1JobConfig.stage1``), whose
    keys a file section or an override may give without repeating the name."""
    if not section or not dataclasses.is_dataclass(cls):
        return None
    tp = _hints(cls).get(section)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def lift_own_keys(cls: type, section: str, tree: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``tree`` (one section of a job file) with the section's own keys moved under it:
    in the ``stage1`` section of a stage-1 job, ``epochs: 3`` means ``stage1: {epochs: 3}``.
    Both forms of one key in the same tree are refused."""
    sub = own_section(cls, section)
    if sub is None:
        return dict(tree)
    top = {f.name for f in dataclasses.fields(cls)}
    own = {f.name for f in dataclasses.fields(sub)}
    out: dict[str, Any] = {}
    lifted: dict[str, Any] = {}
    for key, value in tree.items():
        if key not in top and key in own:
            lifted[key] = value
        else:
            out[key] = value
    if lifted:
        nested = out.get(section)
        nested = dict(nested) if isinstance(nested, Mapping) else {}
        both = sorted(set(nested) & set(lifted))
        if both:
            raise ConfigError(
                f"{where}: '{both[0]}' given twice ({section}.{both[0]} and "
                f"{section}.{section}.{both[0]}); keep one"
            )
        out[section] = {**nested, **lifted}
    return out


def load_layers(
    cls: type[T],
    preset: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    *,
    section: str = "",
    whole_if_flat: bool = False,
) -> Layered[T]:
    """Resolve a config with one precedence rule: defaults < ``preset`` < the YAML file at
    ``path`` (its ``section`` when given) < ``overrides`` (``key.sub=value``) < ``flags``
    (dotted key -> value, only for flags the user actually gave). Raises ConfigError naming
    the key (and the file)."""
    tree: dict[str, Any] = copy.deepcopy(dict(preset or {}))  # never mutate a shared preset
    explicit: set[str] = set()
    if path is not None:
        loaded = _read_yaml(Path(path))
        if section:
            if not set(loaded) <= set(FILE_SECTIONS):
                # A file of one job's keys (a sweep's best stage-2 config, say): it is the
                # section of the job that reads it whole, and no other section's.
                loaded = loaded if whole_if_flat else {}
            else:
                loaded = loaded.get(section) or {}
            if not isinstance(loaded, Mapping):
                raise ConfigError(f"{path}: section '{section}' must be a mapping")
        where = f"{path}" + (f" (section {section})" if section else "")
        loaded = lift_own_keys(cls, section, loaded, where)
        try:
            from_dict(cls, loaded)  # unknown keys / wrong types are named with the file
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        tree = _deep_merge(tree, loaded)
        explicit |= _leaf_keys(loaded)
    items = [_lift_path(cls, section, *parse_override(text)) for text in overrides]
    items += [(key.split("."), value) for key, value in (flags or {}).items()]
    for keys, value in items:
        _check_override_path(cls, keys)
        _set_path(tree, keys, value)
        explicit.add(".".join(keys))
    return Layered(from_dict(cls, tree), frozenset(explicit))


def _lift_path(cls: type, section: str, keys: list[str], value: Any) -> tuple[list[str], Any]:
    """An override's key path with the section's own keys lifted (``epochs`` ->
    ``stage1.epochs`` in a stage-1 job), as :func:`lift_own_keys` does for files."""
    sub = own_section(cls, section)
    if sub is not None and keys:
        top = {f.name for f in dataclasses.fields(cls)}
        if keys[0] not in top and keys[0] in {f.name for f in dataclasses.fields(sub)}:
            return [section, *keys], value
    return keys, value


def route_overrides(
    overrides: Iterable[str], sections: Iterable[str], default: str
) -> dict[str, list[str]]:
    """``--set`` values by the file section they belong to, one spelling in every job: a key
    whose first part names a section (``stage2.layer_decay=0.4``, ``eval.knn_k=1``,
    ``stage1.model.dim=64``) goes to that section, its name removed; any other key goes to
    ``default`` (the job's own stage)."""
    names = list(sections)
    routed: dict[str, list[str]] = {name: [] for name in names}
    for text in overrides:
        key, sep, value = text.partition("=")
        head, dot, rest = key.strip().partition(".")
        if sep and dot and head in names and rest:
            routed[head].append(f"{rest}={value}")
        else:
            routed[default].append(text)
    return routed


def apply_dotted(tree: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested dict ``tree`` with each dotted key of ``values`` set."""
    out = copy.deepcopy(dict(tree))
    for key, value in values.items():
        _set_path(out, key.split("."), copy.deepcopy(value))
    return out


def read_sections(path: str | Path, sections: Iterable[str]) -> None:
    """Check that the YAML file at ``path`` holds only the top-level ``sections``."""
    allowed = list(sections)
    unknown = [k for k in _read_yaml(Path(path)) if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{path}: unknown section '{unknown[0]}'; this job's file has sections "
            + ", ".join(allowed)
        )


def get_dotted(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` of a nested dataclass."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def set_dotted(cfg: T, key: str, value: Any) -> T:
    """A copy of ``cfg`` with dotted ``key`` set to ``value`` (type-checked)."""
    head, _, rest = key.partition(".")
    if not rest:
        return replace(cfg, **{head: value})
    return replace(cfg, **{head: set_dotted(getattr(cfg, head), rest, value)})


def pin(layered: Layered[T], values: Mapping[str, Any], why: str) -> Layered[T]:
    """Set keys whose values the job decides (e.g. frames fixed by a checkpoint).

    A key the user set explicitly to another value is an error naming the key and ``why``,
    never silently replaced.
    """
    cfg = layered.config
    for key, value in values.items():
        current = get_dotted(cfg, key)
        cfg = set_dotted(cfg, key, value)
        wanted = get_dotted(cfg, key)
        if layered.was_set(key) and to_dict(current) != to_dict(wanted):
            raise ConfigError(
                f"{key}={_show(current)} cannot be set here: {why} fixes it to {_show(wanted)}"
            )
    return Layered(cfg, layered.explicit)


def _show(value: Any) -> str:
    plain = to_dict(value)
    return json.dumps(plain) if isinstance(plain, (list, dict)) else str(plain)


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
