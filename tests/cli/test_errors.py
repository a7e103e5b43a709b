"""Every job reports bad input as one line, ``prog: error: ...``, exit status 2, naming the
file or the full dotted key and the reason."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from stars.cli.evaluate import main as evaluate_main
from stars.cli.prepare_data import main as prepare_main
from stars.cli.pretrain import main as pretrain_main
from stars.cli.stage2 import main as stage2_main
from stars.cli.sweep import main as sweep_main


class Unsafe:
    """Not on torch's weights-only allow list."""


def one_line_error(capsys, main, args, prog: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"{prog}: error: "), err
    return err


def test_config_and_override_errors(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1:\n  epochs: [1,\n")
    err = one_line_error(capsys, pretrain_main, ["--config", str(bad)], "pretrain.py")
    assert str(bad) in err and "not valid YAML" in err and "line" in err
    err = one_line_error(capsys, pretrain_main, ["--set", "unknown.key=1"], "pretrain.py")
    assert "'unknown.key'" in err
    err = one_line_error(capsys, pretrain_main, ["--set", "optim.nope=1"], "pretrain.py")
    assert "'optim.nope'" in err and "valid keys" in err
    section = tmp_path / "section.yaml"
    section.write_text("stage3: {}\n")
    err = one_line_error(capsys, pretrain_main, ["--config", str(section)], "pretrain.py")
    assert "unknown section 'stage3'" in err


def test_checkpoint_errors_say_why(capsys, tmp_path, tiny_dataset_dir):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": Unsafe()}, unsafe, pickle_module=pickle)
    common = ["--data", str(tiny_dataset_dir), "--preset", "tiny", "--out", str(tmp_path / "o")]
    err = one_line_error(
        capsys, evaluate_main, ["--checkpoint", str(empty), *common], "evaluate.py"
    )
    assert "the file is empty" in err
    err = one_line_error(
        capsys, evaluate_main, ["--checkpoint", str(garbage), *common], "evaluate.py"
    )
    assert str(garbage) in err
    err = one_line_error(
        capsys, evaluate_main, ["--checkpoint", str(unsafe), *common], "evaluate.py"
    )
    assert "not a weights-only file" in err
    args = ["--from", str(garbage), "--preset", "tiny", "--data", str(tiny_dataset_dir)]
    args += ["--set", f"scale.storage_path={tmp_path}", "--no-tracking"]
    err = one_line_error(capsys, stage2_main, args, "stage2.py")
    assert str(garbage) in err


def test_prepare_data_errors(capsys, tmp_path):
    (tmp_path / "x.npz").write_bytes(b"")
    args = ["npz", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o")]
    err = one_line_error(
        capsys,
        prepare_main,
        [*args, "--class-names", str(tmp_path / "missing.txt")],
        "prepare_data.py",
    )
    assert "missing.txt" in err
    src = tmp_path / "arrays"
    src.mkdir()
    (src / "index.csv").write_bytes(b"sample_id,label\n\xff\xfe,1\n")
    err = one_line_error(
        capsys, prepare_main, ["arrays", str(src), "--out", str(tmp_path / "a")], "prepare_data.py"
    )
    assert "index.csv" in err and "UTF-8" in err


def test_sweep_space_errors(capsys, tmp_path, tiny_dataset_dir):
    space = tmp_path / "space.yaml"
    space.write_text("job: stage2\nspace:\n  stage2.queue_sz: {choice: [1]}\n")
    args = ["--stage1-checkpoint", str(tmp_path / "x.pt"), "--space", str(space)]
    err = one_line_error(capsys, sweep_main, args, "sweep_stage2.py")
    assert str(space) in err and "stage2.queue_sz" in err
    args = ["--stage1-runs", "abc", "--space", str(space).replace("space", "none")]
    err = one_line_error(capsys, sweep_main, args, "sweep_stage2.py")
    assert "cannot read search space" in err


def test_results_in_a_bucket_that_does_not_exist_fail_before_any_work(
    capsys, monkeypatch, s3_endpoint, tiny_dataset_dir
):
    from conftest import S3_CREDENTIALS

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    runs = f"s3://no-such-bucket/runs?endpoint_override={s3_endpoint}&scheme=http"
    common = ["--data", str(tiny_dataset_dir), "--preset", "tiny", "--set"]
    for main, prog, extra in [
        (pretrain_main, "pretrain.py", []),
        (stage2_main, "stage2.py", ["--from", "x.pt"]),
        (sweep_main, "sweep_stage2.py", ["--stage1-checkpoint", "x.pt"]),
    ]:
        err = one_line_error(capsys, main, [*common, f"scale.storage_path={runs}", *extra], prog)
        assert "scale.storage_path=s3://no-such-bucket/runs cannot be written" in err, err
        assert "--set scale.storage_path" in err


def test_costly_mistakes_are_refused_before_ray_starts_or_any_run_exists(
    capsys, tmp_path, tiny_dataset_dir
):
    import ray

    from stars.tracking import runs as tr

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--preset", "tiny", "--data", str(tiny_dataset_dir), "--tracking-uri", uri]
    common += ["--set", f"scale.storage_path={tmp_path / 'runs'}"]
    was_running = ray.is_initialized()
    err = one_line_error(
        capsys, pretrain_main, [*common, "--set", "stage1.epochs=-1"], "pretrain.py"
    )
    assert "stage1.epochs=-1: must be >= 1" in err
    err = one_line_error(
        capsys,
        stage2_main,
        [*common, "--from-run", "0" * 32, "--set", "stage2.layer_decay=2"],
        "stage2.py",
    )
    assert "stage2.layer_decay=2.0: must be > 0 and <= 1" in err
    space = str(Path(__file__).resolve().parents[2] / "search_spaces" / "tiny.yaml")
    err = one_line_error(
        capsys,
        sweep_main,
        [*common, "--stage1-runs", "f" * 32, "--space", space, "--name", "s"],
        "sweep_stage2.py",
    )
    assert "f" * 32 in err
    assert ray.is_initialized() == was_running  # none of them started Ray
    c = tr.client(uri)
    exp = c.get_experiment_by_name("stars-synthetic")
    assert exp is None or not c.search_runs([exp.experiment_id])  # nor created a run
