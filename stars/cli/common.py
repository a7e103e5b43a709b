"""What every command-line job shares: the one error printer, config layers from flags,
Ray start-up and small table printing."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any

from stars.errors import StarsError
from stars.presets import DEFAULT_PRESET, PRESETS
from stars.text import one_line

DATA_HELP = (
    "dataset directory, or a URI every node reads (s3://bucket/path, gs://...; pyarrow's "
    "query options such as ?region=... allowed); default: the embedded synthetic data"
)


def error_line(err: BaseException) -> str:
    """An error's message on one line (its type's name when it has none)."""
    return one_line(err) or type(err).__name__


@contextlib.contextmanager
def reported(prog: str) -> Iterator[None]:
    """Turn a user-facing error into ``prog: error: message`` on stderr and exit status 2."""
    try:
        yield
    except (StarsError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def interruption(prog: str, name: str, *extra: str, kept: str = "") -> Any:
    """:func:`stars.interrupts.interruptible` for a job whose runs are named ``name``: the
    resume command repeats this one with ``--name`` (when it was generated) and ``extra``."""
    from stars.interrupts import interruptible

    argv = list(sys.argv)
    if "--name" not in argv and not any(a.startswith("--name=") for a in argv):
        argv += ["--name", name]
    argv += [a for a in extra if a not in argv]
    kept = kept or (
        "its MLflow runs ended KILLED; checkpoints and results are kept where the 'results' "
        "line above says"
    )
    return interruptible(prog, kept, argv)


def add_overrides_argument(
    parser: argparse.ArgumentParser, flag: str = "--set", dest: str = "overrides", help: str = ""
) -> None:
    """A repeatable ``--set KEY=VALUE`` (dotted config override)."""
    parser.add_argument(
        flag,
        dest=dest,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help or "dotted config override, repeatable",
    )


def routed_overrides(
    args: argparse.Namespace, sections: dict[str, str], default: str
) -> dict[str, list[str]]:
    """Every job's ``--set SECTION.KEY=VALUE`` values by section (see
    :func:`stars.config.route_overrides`), followed by the per-section aliases the job also
    accepts (``sections`` maps a section to its alias's ``args`` attribute, e.g.
    ``{"eval": "eval_set"}``; '' for none)."""
    from stars.config import route_overrides

    routed = route_overrides(args.overrides, sections, default)
    for section, attr in sections.items():
        if attr:
            routed[section] += list(getattr(args, attr, None) or [])
    return routed


def add_config_args(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--preset``, ``--config`` and ``--set``: defaults < preset < file < --set < flags."""
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help=f"named sizes and schedules (default: {DEFAULT_PRESET}, the CPU demo)",
    )
    parser.add_argument("--config", help=config_help)
    add_overrides_argument(
        parser,
        help="config override SECTION.KEY=VALUE as in the --config file (stage1.epochs=3, "
        "stage2.layer_decay=0.4, eval.fewshot_episodes=5); a key without a section is the "
        "job's own stage's; repeatable",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (the YAML the job would log) and exit",
    )
    add_version_arg(parser)


def without_unused_synthetic(section: dict[str, Any]) -> dict[str, Any]:
    """A printed section without ``data.synthetic`` when ``data.path`` names a dataset that
    is not the synthetic one it describes: those keys have no effect then, and a file giving
    both is refused."""
    from pathlib import PurePath

    from stars.config import from_dict
    from stars.data.config import SyntheticConfig
    from stars.data.prepare import synthetic_dir_name

    data = section.get("data")
    if not (isinstance(data, dict) and data.get("path") and "synthetic" in data):
        return section
    described = synthetic_dir_name(from_dict(SyntheticConfig, data["synthetic"]))
    if PurePath(str(data["path"])).name != described:
        section = {**section, "data": {k: v for k, v in data.items() if k != "synthetic"}}
    return section


def without_unused_crop(section: dict[str, Any]) -> dict[str, Any]:
    """A printed stage-2 section without ``data.min_crop_frames`` when its view is unaltered
    (``stage2.augment`` false): the key has no effect then, and a file setting it is refused."""
    own, data = section.get("stage2"), section.get("data")
    if isinstance(own, dict) and own.get("augment") is False and isinstance(data, dict):
        section = {**section, "data": {k: v for k, v in data.items() if k != "min_crop_frames"}}
    return section


def sections_text(prog: str, **sections: Any) -> str:
    """Resolved configs as a ``--config`` file (one section each), for ``--print-config``."""
    import yaml

    from stars.config import to_dict

    tree = {
        name: without_unused_crop(without_unused_synthetic(to_dict(cfg)))
        for name, cfg in sections.items()
        if cfg is not None
    }
    head = f"# resolved by {prog} --print-config; usable as --config\n"
    return head + yaml.safe_dump(tree, sort_keys=False)


def add_version_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=version_line())


def version_line() -> str:
    """``stars X.Y.Z (torch ..., ray ...)`` without importing torch or ray."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"stars {of('stars')} (torch {of('torch')}, ray {of('ray')}, mlflow {of('mlflow')})"


STAGE1_HELP = (
    "the stage-1 source: an MLflow run id (a stage-1 run), a checkpoint file, checkpoint "
    "directory or run directory of ours, a URI of one, or a published MAMP / STARS file"
)


def add_stage1_arg(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
    aliases: tuple[str, ...] = (),
    help: str = STAGE1_HELP,
    **kwargs: Any,
) -> None:
    """``--stage1 SOURCE``: the one spelling of a stage-1 source in every job (the older
    flags of that job stay as aliases)."""
    parser.add_argument("--stage1", *aliases, dest="stage1", metavar="SOURCE", help=help, **kwargs)


def is_run_id(text: str) -> bool:
    """An MLflow run id (32 hex digits) that is not also the name of a file here."""
    import re

    return bool(re.fullmatch(r"[0-9a-f]{32}", text)) and not os.path.exists(text)


def stage1_source(tracker: Any, text: str) -> Any:
    """The :class:`stars.workflow.stages.Stage1Ref` that ``--stage1 text`` names."""
    from stars.workflow.stages import stage1_from_checkpoint, stage1_from_run

    return stage1_from_run(tracker, text) if is_run_id(text) else stage1_from_checkpoint(text)


def add_seed_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--seed N`` (the job's one seed) and ``--seeds N|LIST`` (repeat ``what`` per seed,
    under one group run, with intervals over seeds)."""
    group = parser.add_argument_group("seeds")
    group.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the job's seed (default 0): data order, initialisation, masking and evaluation "
        "draws derive from it",
    )
    group.add_argument(
        "--seeds",
        default="",
        metavar="N|LIST",
        help=f"repeat {what} with N seeds (--seed, --seed+1, ...) or with the listed ones "
        "(--seeds 0,3,7); aggregates with 95 %% intervals over seeds go on one group run",
    )
    group.add_argument(
        "--seeds-at-once",
        type=int,
        default=0,
        metavar="N",
        help="seeds run concurrently (default: as many as the cluster has room for)",
    )


def add_verbose_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's and MLflow's logs live (default: in a log file, path printed once)",
    )


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MLflow")
    group.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    group.add_argument("--experiment", default=None, help="experiment (default: per dataset)")
    group.add_argument("--no-tracking", action="store_true", help="run without MLflow")


def tracking_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The tracking keys the user gave as flags (a default never counts as given)."""
    flags: dict[str, Any] = {}
    if args.tracking_uri is not None:
        flags["uri"] = args.tracking_uri
    if args.experiment is not None:
        flags["experiment"] = args.experiment
    if args.no_tracking:
        flags["enabled"] = False
    return flags


def tracking_config(args: argparse.Namespace, path: str | None = None, overrides=()) -> Any:
    """The job's TrackingConfig: the file's ``tracking`` section < ``--set tracking.*`` <
    the MLflow flags."""
    from stars.config import load_layers
    from stars.tracking.config import TrackingConfig

    return load_layers(
        TrackingConfig, {}, path, overrides, tracking_flags(args), section="tracking"
    ).config


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave (a value other than None): a job's top config layer."""
    return {key: value for key, value in values.items() if value is not None}


def data_and_seed_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--data`` and ``--seed`` as config keys of a training job, when given."""
    return given({"data.path": args.data or None, "seed": args.seed})


def protocol_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


START_ATTEMPTS = 3  # Ray gives a local raylet 30 s; a loaded 2-core machine can need more


def init_ray(verbose: bool = True) -> None:
    """Join the cluster when there is one (``ray job submit`` sets RAY_ADDRESS), else start
    a local instance whose services listen on 127.0.0.1 only. Quiet (``verbose`` False): the
    workers' own output stays in Ray's session logs instead of streaming to this console."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        local = not os.environ.get("RAY_ADDRESS")
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                with local_ray_on_loopback() if local else contextlib.nullcontext():
                    ray.init(log_to_driver=verbose, configure_logging=False)
                break
            except Exception as err:  # Ray raises a bare Exception for a start-up timeout
                if not (local and "timed out during startup" in str(err)):
                    raise
                ray.shutdown()
                if attempt == START_ATTEMPTS:
                    raise StarsError(
                        f"Ray's local node did not come up in {START_ATTEMPTS} tries of 30 s "
                        "(the machine is overloaded: close other jobs, or start Ray yourself "
                        "with 'ray start --head' and set RAY_ADDRESS)"
                    ) from None
                print(
                    f"[stars] Ray's local start timed out (try {attempt} of {START_ATTEMPTS}: "
                    "the machine is busy); trying again",
                    file=sys.stderr,
                )
        from stars.cli.console import reroute_after_ray_init
        from stars.interrupts import reinstall

        reroute_after_ray_init()
        reinstall()
    from stars.data.pipeline import quiet_ray_data

    quiet_ray_data()


@contextlib.contextmanager
def local_ray_on_loopback() -> Iterator[None]:
    """While a local Ray instance starts in this block, make it (GCS, raylet, workers,
    agents) listen on 127.0.0.1, not on every interface: Ray binds loopback only when its
    node address is the loopback one, which it picks when clustering is off (the switch its
    macOS/Windows builds use). Ray's processes, started here, keep the setting; this process
    gets its own back afterwards, so a later ``ray start`` it runs can still join a cluster.
    ``STARS_RAY_ALL_INTERFACES=1`` keeps Ray's own default."""
    if os.environ.get("STARS_RAY_ALL_INTERFACES") == "1":
        yield
        return
    import ray._private.ray_constants as ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    before = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; this process imported it
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before[0]
        ray_constants.ENABLE_RAY_CLUSTER = before[1]


def run_name(prefix: str) -> str:
    """``prefix-YYYYmmdd-HHMMSS-xxxxxx``: the random tail keeps two jobs started in the same
    second (on any machine) from sharing run directories."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
