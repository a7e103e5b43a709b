"""The GPU benchmark runs end to end on a CPU with the tiny preset (the dry run a user can do
before taking a GPU), reports every figure it promises, and never records CPU rows as GPU."""

import json
import math

import pytest
import torch

from bench import gpu

DRY_RUN = [
    "--preset", "tiny", "--device", "cpu", "--batches", "2", "--repeats", "1",
    "--matmul-size", "128", "--feature-batch", "4", "--loss-steps", "4", "--loss-batch", "2",
]  # fmt: skip


def test_dry_run_reports_every_mode_and_figure(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main([*DRY_RUN, "--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    expected = {"gpu_bf16_matmul_tflop_s", "gpu_features_bf16_seq_per_s", "gpu_loss_fp32"}
    expected |= {"gpu_loss_bf16", "gpu_loss_bf16_vs_fp32_gap"}
    for mode in gpu.MODES:
        for figure in ("step_s", "seq_per_s", "tflop_s", "peak_memory_mb"):
            expected.add(f"gpu_stage1_{mode}_b2_{figure}")
    assert expected <= set(rows), expected - set(rows)
    for name in expected - {"gpu_loss_bf16_vs_fp32_gap"}:
        assert math.isfinite(rows[name]["value"]) and rows[name]["value"] > 0, name
    assert rows["gpu_stage1_fp32_b2_seq_per_s"]["value"] == pytest.approx(
        2 / rows["gpu_stage1_fp32_b2_step_s"]["value"]
    )
    # The same initialisation, batches and masking draws: bf16 stays close to fp32.
    assert rows["gpu_loss_bf16_vs_fp32_gap"]["value"] < 0.05
    assert all(r["device"].startswith("cpu") for r in rows.values())
    assert "gpu_stage1_compile_b2_step_s" in capsys.readouterr().out


def test_record_refuses_a_cpu_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "RESULTS_FILE", tmp_path / "bench-results.json")
    with pytest.raises(SystemExit, match="not on a GPU"):
        gpu.main([*DRY_RUN, "--modes", "fp32", "--loss-steps", "0", "--record"])
    assert not (tmp_path / "bench-results.json").exists()


def test_flop_count_grows_with_the_batch():
    cfg = gpu.preset("tiny")
    import torch

    one, four = (gpu.step_flop(cfg, b, torch.device("cpu")) for b in (1, 4))
    assert four == pytest.approx(4 * one, rel=0.02)


def test_append_adds_new_rows_to_the_same_devices_run(tmp_path, monkeypatch):
    path = tmp_path / "bench-results.json"
    monkeypatch.setattr(gpu, "device_name", lambda device: "Some GPU")
    cuda = torch.device("cuda")
    gpu.record([gpu.Row("peak", 1.0, "TFLOP/s"), gpu.Row("a", 2.0, "s")], path, cuda)
    gpu.record([gpu.Row("peak", 9.0, "TFLOP/s"), gpu.Row("b", 3.0, "s")], path, cuda, append=True)
    rows = {r["name"]: r["value"] for r in json.loads(path.read_text())["gpu"]["rows"]}
    assert rows == {"peak": 1.0, "a": 2.0, "b": 3.0}
    gpu.record([gpu.Row("c", 4.0, "s")], path, cuda)  # without append: a new run replaces
    assert [r["name"] for r in json.loads(path.read_text())["gpu"]["rows"]] == ["c"]
