from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from stars.config import ConfigError, dump_yaml, flatten, load_layers, to_dict
from stars.data.config import DataConfig


def load_config(cls, path=None, overrides=()):
    return load_layers(cls, None, path, overrides).config


@dataclass(frozen=True)
class Inner:
    depth: int = 8
    rate: float = 0.5
    name: str = "paper"


@dataclass(frozen=True)
class Job:
    data: DataConfig = field(default_factory=DataConfig)
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ()
    flag: bool = False


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"inner": {"depth": 4}, "data": {"num_frames": 64}}))
    cfg = load_config(
        Job,
        path,
        [
            "data.num_frames=120",
            "inner.rate=1",
            "tags=[a, b]",
            "flag=true",
            "data.train_crop=[0.6, 0.9]",
        ],
    )
    assert cfg.inner.depth == 4
    assert cfg.data.num_frames == 120
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert cfg.tags == ("a", "b")
    assert cfg.flag is True
    assert cfg.data.train_crop == (0.6, 0.9)
    assert cfg.inner.name == "paper"


def test_unknown_override_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(Job, None, ["data.num_frame=120"])
    msg = str(err.value)
    assert "data.num_frame" in msg and "num_frames" in msg and "batch_size" in msg


def test_unknown_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  deepth: 3\n")
    with pytest.raises(ConfigError, match=r"inner\.deepth.*valid keys: depth, rate, name"):
        load_config(Job, path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"inner\.depth"):
        load_config(Job, None, ["inner.depth=deep"])
    with pytest.raises(ConfigError, match="flag"):
        load_config(Job, None, ["flag=3"])
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(Job, None, ["inner.depth"])


def test_validation_in_post_init_is_reported():
    with pytest.raises(ConfigError, match="train_crop"):
        load_config(Job, None, ["data.train_crop=[0.9, 0.5]"])


def test_dump_round_trips(tmp_path):
    cfg = load_config(Job, None, ["inner.depth=3", "data.batch_size=7"])
    text = dump_yaml(cfg, tmp_path / "c.yaml")
    again = load_config(Job, tmp_path / "c.yaml")
    assert again == cfg
    assert yaml.safe_load(text) == to_dict(cfg)
    assert flatten(cfg)["data.synthetic.num_classes"] == 120


def test_configs_are_frozen():
    cfg = load_config(Job)
    with pytest.raises(AttributeError):
        cfg.flag = True  # type: ignore[misc]
