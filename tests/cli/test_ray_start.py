"""A local Ray start that times out on a busy machine is tried again, and gives up in one
line saying why; a local start binds loopback."""

from __future__ import annotations

import pytest

from stars.cli import common
from stars.errors import StarsError

TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


class FakeRay:
    def __init__(self, failures: int):
        self.failures, self.calls, self.shutdowns = failures, 0, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise TIMEOUT

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    def install(failures: int) -> FakeRay:
        fake = FakeRay(failures)
        monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setenv("STARS_RAY_ALL_INTERFACES", "1")  # leave Ray's constants alone
        return fake

    return install


def test_a_slow_start_is_tried_again(fake_ray, capsys):
    fake = fake_ray(failures=2)
    common.init_ray(verbose=False)
    assert fake.calls == 3 and fake.shutdowns == 2
    err = capsys.readouterr().err
    assert err.count("timed out (try") == 2


def test_a_start_that_never_comes_up_is_one_line(fake_ray):
    fake = fake_ray(failures=common.START_ATTEMPTS)
    with pytest.raises(StarsError) as err:
        common.init_ray(verbose=False)
    assert fake.calls == common.START_ATTEMPTS
    assert "\n" not in str(err.value) and "overloaded" in str(err.value)


def test_other_start_errors_are_not_retried(fake_ray, monkeypatch):
    import ray

    fake = fake_ray(failures=0)

    def broken(**kwargs):
        fake.calls += 1
        raise RuntimeError("something else")

    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(RuntimeError, match="something else"):
        common.init_ray(verbose=False)
    assert fake.calls == 1


def test_a_local_start_asks_ray_for_loopback_and_gives_the_setting_back(monkeypatch):
    import os

    import ray._private.ray_constants as ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    monkeypatch.delenv("STARS_RAY_ALL_INTERFACES", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.delenv(name, raising=False)
    with common.local_ray_on_loopback():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert os.environ[name] == "0"  # what Ray's own processes inherit
    assert ray_constants.ENABLE_RAY_CLUSTER is True and name not in os.environ
