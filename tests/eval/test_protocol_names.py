"""The config validates protocol names without importing the protocol table; the two agree."""

from __future__ import annotations

import pytest

from stars.eval.config import FEATURE_PROTOCOLS, PROTOCOL_NAMES, TRAINING_PROTOCOLS, EvalConfig
from stars.eval.protocols import PROTOCOLS


def test_the_config_names_every_protocol_of_the_table_with_its_kind():
    assert tuple(PROTOCOLS) == PROTOCOL_NAMES
    assert tuple(n for n, p in PROTOCOLS.items() if p.kind == "features") == FEATURE_PROTOCOLS
    assert tuple(n for n, p in PROTOCOLS.items() if p.kind == "training") == TRAINING_PROTOCOLS
    assert EvalConfig().protocols == FEATURE_PROTOCOLS


def test_an_unknown_protocol_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown evaluation protocol.*knm.*choose from knn"):
        EvalConfig(protocols=("knm",))
