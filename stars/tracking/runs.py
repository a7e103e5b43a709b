"""One MLflow run per stage-1 training, stage-2 tuning or evaluation, driven by run id."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stars import interrupts
from stars.config import dump_yaml, flatten
from stars.tracking import liveness

# MLflow's own limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH); the YAML artifact has
# every value whole.
MAX_PARAM_CHARS = 6000

# Lineage tags.
STAGE = "stars.stage"
CHECKPOINT = "stars.checkpoint"
SOURCE_RUN = "stars.source_run_id"
SOURCE_CHECKPOINT = "stars.source_checkpoint"
SWEEP = "stars.sweep_id"
TRIAL = "stars.trial_id"
SWEEP_POINT = "stars.sweep_point"  # which point of a two-level sweep's stage-1 space
ERROR = "stars.error"  # one line: why a run failed
PLACEHOLDER = "stars.placeholder"  # a run recorded for a trial interrupted before it began
DATA_DIGEST = "stars.data_digest"
PRESET = "stars.preset"
PARENT = "mlflow.parentRunId"  # MLflow's own nesting: the UI shows children under a parent
NOTE = "mlflow.note.content"  # the run's description in the UI
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3 opens GenAI views unless this says training
TRAINING_KIND = "custom_model_development"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    """Id of experiment ``name``, created when missing (restored when deleted), tagged as a
    model-training experiment so the UI opens on its runs."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        return mlflow_client.create_experiment(name, tags={EXPERIMENT_KIND: TRAINING_KIND})
    if exp.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND) != TRAINING_KIND:
        mlflow_client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
    return exp.experiment_id


def unique_run_name(mlflow_client, exp_id: str, name: str) -> str:
    """``name``, or ``name #2``, ``#3``... when the experiment already has a run of that name."""
    taken = {
        r.info.run_name
        for r in mlflow_client.search_runs(
            [exp_id], filter_string=f"attributes.run_name LIKE '{_like(name)}%'", max_results=1000
        )
    }
    if name not in taken:
        return name
    n = 2
    while f"{name} #{n}" in taken:
        n += 1
    return f"{name} #{n}"


def _like(text: str) -> str:
    """A LIKE prefix that cannot break the filter (exact matching happens afterwards)."""
    return text.split("'")[0].split("%")[0]


def find_runs(mlflow_client, experiment: str, **tags: str) -> list:
    """Runs of ``experiment`` carrying every tag ``key=value`` (tag keys as given, e.g.
    ``**{SWEEP: "s1", STAGE: "stage2"}``); empty when the experiment does not exist."""
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(mlflow_client.search_runs([exp.experiment_id], query, max_results=10000))


def code_version(repo: Path | None = None) -> dict[str, str]:
    """Git sha and dirty flag of the code that runs (``unknown`` outside a checkout, e.g. in
    ``ray job submit``'s package copy), read with GitPython as MLflow's own git context does;
    the sha also goes under MLflow's standard ``mlflow.source.git.commit`` tag."""
    repo = repo or Path(__file__).resolve().parents[2]
    unknown = {"stars.git_sha": "unknown", "stars.git_dirty": "unknown"}
    try:
        import git  # GitPython, an MLflow dependency; importing it fails without a git binary
    except ImportError:
        return unknown
    try:
        # The context manager ends the `git cat-file` helpers GitPython keeps running.
        with git.Repo(repo) as checkout:
            sha = checkout.head.commit.hexsha
            dirty = checkout.is_dirty(untracked_files=False)
    except (OSError, ValueError, git.GitError):
        return unknown
    return {
        "stars.git_sha": sha,
        "stars.git_dirty": str(dirty).lower(),
        "mlflow.source.git.commit": sha,
    }


def params_of(cfg: Any) -> dict[str, str]:
    """Flattened config as MLflow params, long values truncated."""
    out = {}
    for key, value in flatten(cfg).items():
        text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
        out[key] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def log_metrics(mlflow_client, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    """Numeric entries of ``metrics`` at ``step`` in one batch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    mlflow_client.log_batch(run_id, metrics=batch)  # MLflow splits it into allowed batches


def log_params(mlflow_client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    mlflow_client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])


def log_dataset(mlflow_client, run_id: str, data: Any, split: str) -> None:
    """``mlflow.log_input`` equivalent: the dataset's digest, path, layout and split sizes."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    profile = {"num_samples": data.num_samples, "splits": dict(data.manifest.splits)}
    schema = {
        "layout": data.layout.name,
        "num_joints": data.num_joints,
        "num_bodies": data.num_bodies,
        "t_max": data.t_max,
        "num_classes": data.num_classes,
    }
    dataset = Dataset(
        name=data.manifest.name or Path(data.root).name,
        digest=data.digest[:36],
        source_type="local" if "://" not in str(data.root) else "uri",
        source=json.dumps({"uri": str(data.root)}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    mlflow_client.log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)])]
    )


def error_summary(text: str, limit: int = 500) -> str:
    """One line saying why something failed: the last ``...Error: message`` line of a
    (possibly remote, multi-line) error text, else its first line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    return (causes[-1] if causes else lines[0] if lines else "")[:limit]


class StageRun:
    """An MLflow run seen through its id: params, metrics, tags, artifacts, status."""

    def __init__(self, mlflow_client, run_id: str):
        self.client = mlflow_client
        self.run_id = run_id

    @classmethod
    def create(
        cls,
        mlflow_client,
        experiment: str,
        name: str,
        stage: str,
        cfg: Any,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str = "",
    ) -> StageRun:
        """A new run of ``stage`` named ``name`` (made unique), nested under
        ``parent_run_id`` when given, with ``cfg`` as params and ``config.yaml``."""
        all_tags = {STAGE: stage, **code_version(), **(tags or {})}
        if parent_run_id:
            all_tags[PARENT] = parent_run_id
        exp_id = experiment_id(mlflow_client, experiment)
        run = mlflow_client.create_run(
            exp_id, run_name=unique_run_name(mlflow_client, exp_id, name), tags=all_tags
        )
        self = cls(mlflow_client, run.info.run_id)
        log_params(mlflow_client, self.run_id, params_of(cfg))
        mlflow_client.log_text(self.run_id, dump_yaml(cfg), "config.yaml")
        return self

    def fill(self, name: str, cfg: Any, tags: Mapping[str, str]) -> None:
        """Give a placeholder run what :meth:`create` gives a new one."""
        self.client.update_run(self.run_id, name=name)
        self.set_tags({**code_version(), **tags})
        self.client.delete_tag(self.run_id, PLACEHOLDER)
        log_params(self.client, self.run_id, params_of(cfg))
        self.client.log_text(self.run_id, dump_yaml(cfg), "config.yaml")

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        log_metrics(self.client, self.run_id, metrics, step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> str:
        self.client.log_artifact(self.run_id, str(path), artifact_path)
        name = Path(path).name
        return f"{self.artifact_uri}/{artifact_path + '/' if artifact_path else ''}{name}"

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def describe(self, text: str) -> None:
        """The run's description (markdown) in the MLflow UI."""
        self.client.set_tag(self.run_id, NOTE, text)

    @property
    def name(self) -> str:
        return self.client.get_run(self.run_id).info.run_name or self.run_id

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def clear_error(self) -> None:
        """Drop a failure's tags (a resumed run that goes on is no longer that failure)."""
        tags = self.client.get_run(self.run_id).data.tags
        for key in (ERROR, liveness.ENDED_BY):
            if key in tags:
                self.client.delete_tag(self.run_id, key)

    @contextmanager
    def active(self) -> Iterator[StageRun]:
        """End FINISHED, or FAILED on an error, KILLED on Ctrl-C or SIGTERM: never left
        RUNNING. While the block runs, the run carries this driver's heartbeat."""
        liveness.beat(self.client, self.run_id)
        try:
            yield self
        except KeyboardInterrupt:
            self.kill(interrupts.received() or "SIGINT")
            raise
        except SystemExit as err:
            if err.code == interrupts.EXIT_INTERRUPTED:
                self.kill(interrupts.received() or "SIGINT")
            else:
                self.fail(f"the job exited with status {err.code}")
            raise
        except BaseException as err:
            self.fail(error_summary(str(err)) or repr(err))
            raise
        finally:
            liveness.stop_beating(self.run_id)
        self.clear_error()
        self.end("FINISHED")

    def kill(self, signal_name: str) -> None:
        self.client.set_tag(self.run_id, liveness.ENDED_BY, signal_name)
        self.client.set_tag(self.run_id, ERROR, f"interrupted by {signal_name}")
        self.end("KILLED")

    def fail(self, why: str) -> None:
        self.client.set_tag(self.run_id, ERROR, why)
        self.end("FAILED")
