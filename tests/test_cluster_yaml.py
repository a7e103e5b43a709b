"""cluster.yaml is a valid Ray cluster-launcher file and installs what this machine runs."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_follows_the_installed_ray_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(), schema)


def test_node_types_gpu_workers_and_the_project_install():
    cfg = load()
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["max_workers"] > t["min_workers"] for t in gpu)
    assert types[cfg["head_node_type"]]["resources"] == {}  # no training on the head
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -q -e ~/stars" in setup
    assert cfg["file_mounts"]["~/stars"] == "."
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "mlflow server" in " ".join(cfg["head_setup_commands"])


def test_pins_equal_the_installed_versions():
    setup = " ".join(load()["setup_commands"])
    pins = dict(re.findall(r'"?([a-z]+)(?:\[[^\]]*\])?==([0-9.]+)"?', setup))
    for package in ("torch", "ray", "mlflow", "pyarrow"):
        installed = version(package).split("+")[0]
        assert pins[package] == installed, (package, pins[package], installed)
