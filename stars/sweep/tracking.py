"""The sweep's MLflow side: the sweep run (space, command, objective, results), and a
driver-side Tune callback that closes trial runs (an ASHA-stopped trial's process is killed,
so its own ``finally`` never runs) and prints one progress line per trial event."""

from __future__ import annotations

import json
from typing import Any

from stars.sweep.trial import TRIAL_DONE
from stars.text import one_line
from stars.tracking import runs as tr


def find_sweep_run(mlflow_client, experiment: str, sweep: str) -> str:
    hits = tr.find_runs(mlflow_client, experiment, **{tr.STAGE: "sweep", tr.SWEEP: sweep})
    return hits[0].info.run_id if hits else ""


def trial_runs(mlflow_client, experiment: str, sweep: str) -> dict[str, Any]:
    """Trial id -> MLflow run of every trial of ``sweep``."""
    runs = tr.find_runs(mlflow_client, experiment, **{tr.SWEEP: sweep, tr.STAGE: "stage2"})
    return {r.data.tags.get(tr.TRIAL, ""): r for r in runs}


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


class SweepProgress(_tune_callback_base()):
    """Trial events as progress lines, and trial runs closed with the right status."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        sweep: str,
        objective: str,
        quiet: bool = False,
    ):
        self.uri, self.experiment, self.sweep, self.objective = uri, experiment, sweep, objective
        self.quiet = quiet
        self.done = self.failed = self.stopped = 0
        self.started: set[str] = set()  # trial ids started in this session...
        self.ended: set[str] = set()  # ...and those whose end Tune reported
        self._client = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment
        return {**self.__dict__, "_client": None}

    def log(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    @property
    def client(self):
        if self._client is None:
            self._client = tr.client(self.uri)
        return self._client

    def _close(self, trial: Any, status: str, error: str = "") -> None:
        if not self.uri:
            return
        run = trial_runs(self.client, self.experiment, self.sweep).get(trial.trial_id)
        if run is None:
            return
        if error and tr.ERROR not in run.data.tags:  # the trial's own message is more precise
            self.client.set_tag(run.info.run_id, tr.ERROR, one_line(error, 500))
        if run.info.status == "RUNNING" or (status == "FAILED" and run.info.status != "FAILED"):
            self.client.set_terminated(run.info.run_id, status)

    def _line(self, trials: list[Any], trial: Any, what: str, ended: bool = False) -> None:
        others = [t for t in trials if not (ended and t is trial)]
        running = sum(1 for t in others if t.status == "RUNNING")
        pending = sum(1 for t in others if t.status == "PENDING")
        self.log(
            f"[sweep] trial {trial.trial_id} {what}  |  running {running}, pending {pending}, "
            f"done {self.done}, stopped {self.stopped}, failed {self.failed}"
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.add(trial.trial_id)
        params = (trial.config or {}).get("params", {})
        shown = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        self._line(trials, trial, f"started ({shown})")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        result = trial.last_result or {}
        value = result.get("objective")
        if result.get(TRIAL_DONE):
            self.done += 1
            self._close(trial, "FINISHED")
            self._line(trials, trial, f"done: {self.objective}={_short(value)}", ended=True)
        else:
            self.stopped += 1
            self._close(trial, "KILLED")
            epoch = result.get("epoch")
            self._line(trials, trial, f"stopped early at epoch {epoch} ({_short(value)})", True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self.failed += 1
        error = _error_text(trial)
        self._close(trial, "FAILED", error or "trial failed")
        self._line(trials, trial, f"FAILED: {one_line(error, 160)}", ended=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _error_text(trial: Any) -> str:
    """The last line of a failed trial's error (its exception), as far as it can be read."""
    text = ""
    for read in (trial.get_pickled_error, trial.get_error):
        try:
            err = read()
        except Exception:  # the error file may live on another node
            continue
        text = str(err or "")
        if text.strip():
            break
    return tr.error_summary(text) or "trial failed"


def close_interrupted(
    mlflow_client,
    experiment: str,
    sweep: str,
    sweep_run_id: str,
    trial_ids: list[str],
    signal_name: str,
) -> None:
    """Every trial stopped by an interruption gets a KILLED run: its own when it had one,
    else a placeholder (tags only) that the trial fills in when ``--resume`` runs it."""
    runs = trial_runs(mlflow_client, experiment, sweep)
    for trial_id in trial_ids:
        run = runs.get(trial_id)
        if run is not None:
            if run.info.status == "RUNNING":
                tr.StageRun(mlflow_client, run.info.run_id).kill(signal_name)
            continue
        exp = mlflow_client.get_experiment_by_name(experiment)
        created = mlflow_client.create_run(
            exp.experiment_id,
            run_name=f"trial {trial_id} (interrupted before its run began)",
            tags={
                tr.STAGE: "stage2",
                tr.SWEEP: sweep,
                tr.TRIAL: trial_id,
                tr.PARENT: sweep_run_id,
                tr.PLACEHOLDER: "true",
            },
        )
        tr.StageRun(mlflow_client, created.info.run_id).kill(signal_name)
