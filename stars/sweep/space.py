"""Search spaces: YAML files of a job's own dotted config keys mapped to distributions.

::

    job: stage2                 # whose keys these are: stage1 or stage2
    space:
      stage2.queue_size: {choice: [1024, 4096, 16384, 65536]}
      stage2.layer_decay: {uniform: [0.1, 0.7]}
      optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
      stage2.frozen_blocks: {randint: [2, 7]}      # 2..6
      stage2.topk: {grid: [1, 5]}                  # every value, crossed with the rest

Every key is checked against the job's config class and every value against the key's type
when the file is loaded; errors name the file, the key and the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from stars.config import ConfigError, coerce_value
from stars.config_ranges import problem as range_problem
from stars.train.config import Stage1JobConfig, Stage2JobConfig

JOBS: dict[str, type] = {"stage1": Stage1JobConfig, "stage2": Stage2JobConfig}
Kind = Literal["choice", "grid", "uniform", "loguniform", "randint"]
KINDS: tuple[str, ...] = typing.get_args(Kind)


@dataclass(frozen=True)
class Dist:
    """One key's distribution: ``values`` for choice/grid, ``(low, high)`` for the ranges
    (``randint``: integers low..high-1)."""

    kind: Kind
    values: tuple[Any, ...]

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        low, high = self.values
        return {
            "uniform": tune.uniform,
            "loguniform": tune.loguniform,
            "randint": tune.randint,
        }[self.kind](low, high)

    def points(self) -> list[Any]:
        """Every value, for spaces that are enumerated (choice and grid)."""
        if self.kind not in ("choice", "grid"):
            raise ConfigError(f"a {self.kind} range has no finite list of points")
        return list(self.values)

    def describe(self) -> str:
        return f"{self.kind}({', '.join(str(v) for v in self.values)})"


@dataclass(frozen=True)
class SearchSpace:
    """A validated space: the job it belongs to and its keys' distributions."""

    job: str
    params: dict[str, Dist]
    source: str = ""

    def to_tune(self) -> dict[str, Any]:
        return {key: dist.to_tune() for key, dist in self.params.items()}

    def grid(self) -> list[dict[str, Any]]:
        """Every point of an enumerated space (the cross product of its value lists)."""
        keys = list(self.params)
        try:
            lists = [self.params[k].points() for k in keys]
        except ConfigError as err:
            raise ConfigError(
                f"{self.source}: a stage-1 space is enumerated (one checkpoint per point): "
                f"use choice or grid ({err})"
            ) from None
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*lists)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "space": {k: {d.kind: list(d.values)} for k, d in self.params.items()},
        }


def _key_type(cls: type, key: str, where: str) -> Any:
    current: Any = cls
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{where}: '{'.'.join(parts[:depth])}' is a value, not a section")
        hints = typing.get_type_hints(current)
        if part not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(current))
            section = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"{where}: unknown key (no '{part}' in {section}; valid: {valid})")
        current = hints[part]
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{where}: is a section; name one of its keys")
    return current


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: range bounds must be numbers, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: range bounds must be finite, got {value!r}")
    return value


def parse_dist(spec: Any, key_type: Any, where: str) -> Dist:
    """One ``{kind: values}`` entry, checked against the key's type."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{where}: expected one distribution like {{choice: [...]}}, got {spec!r}; "
            f"distributions: {', '.join(KINDS)}"
        )
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(values, list):
        raise ConfigError(f"{where}: {kind} takes a list, got {values!r}")
    if kind in ("choice", "grid"):
        if not values:
            raise ConfigError(f"{where}: {kind} has no values")
        checked = tuple(coerce_value(v, key_type, where) for v in values)
        return Dist(kind, checked)
    if len(values) != 2:
        raise ConfigError(f"{where}: {kind} takes [low, high], got {values!r}")
    low, high = (_number(v, where) for v in values)
    if not low < high:
        raise ConfigError(f"{where}: empty range [{low}, {high}] (low must be below high)")
    base = typing.get_args(key_type) or (key_type,)
    if kind == "randint":
        if int not in base or not all(float(v).is_integer() for v in (low, high)):
            raise ConfigError(f"{where}: randint needs an integer key and integer bounds")
        return Dist(kind, (int(low), int(high)))
    if float not in base:
        raise ConfigError(f"{where}: {kind} draws real numbers, but the key takes {key_type}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low}")
    return Dist(kind, (float(low), float(high)))


# The repository's search spaces: found from the package, whatever the current directory.
REPO_ROOT = Path(__file__).resolve().parents[2]
SPACES_DIR = REPO_ROOT / "search_spaces"
# The stage-2 space each preset's sweep searches by default (sizes of that preset).
PRESET_SPACES = {
    "tiny": "tiny.yaml",
    "small": "small.yaml",
    "paper": "stage2.yaml",
    "paper_dec3": "stage2.yaml",
}


def space_path(text: str | None, preset: str) -> Path:
    """The search-space file ``--space text`` names, or the preset's default one. A relative
    path is the current directory's when it exists there, else the repository's
    (``search_spaces/tiny.yaml`` works from any directory)."""
    if not text:
        return SPACES_DIR / PRESET_SPACES.get(preset, "stage2.yaml")
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def load_space(path: str | Path, job: str | None = None) -> SearchSpace:
    """Read and validate a search-space file; ``job`` (if given) must match its ``job``."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read search space {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"search space {path} is not valid YAML ({type(err).__name__})") from None
    if not isinstance(doc, dict) or set(doc) - {"job", "space", "description"}:
        raise ConfigError(f"{path}: expected the keys job, space (and description)")
    kind = doc.get("job")
    if kind not in JOBS:
        raise ConfigError(f"{path}: job must be one of {', '.join(JOBS)}, got {kind!r}")
    if job is not None and kind != job:
        raise ConfigError(f"{path}: a {kind} space where a {job} space is expected")
    space = doc.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: 'space' must map at least one key to a distribution")
    params = {}
    for key, spec in space.items():
        where = f"{path}: {key}"
        params[str(key)] = parse_dist(spec, _key_type(JOBS[kind], str(key), where), where)
        _check_range(JOBS[kind], str(key), params[str(key)], where)
    return SearchSpace(kind, params, str(path))


def _check_range(cls: type, key: str, dist: Dist, where: str) -> None:
    """Every point of a choice or grid, and both ends of a range, lie in the key's range
    (:mod:`stars.config_ranges`): a space that would only fail inside a trial is refused."""
    *sections, name = key.split(".")
    owner: Any = cls
    for part in sections:
        owner = typing.get_type_hints(owner)[part]
    values = list(dist.values)
    if dist.kind == "randint":
        values = [values[0], values[1] - 1]
    for value in values:
        if text := range_problem(owner.__name__, name, value, key):
            raise ConfigError(f"{where}: {dist.describe()} reaches {text}")
