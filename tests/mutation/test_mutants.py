"""The mutation list stays applicable: each original text occurs exactly once in its file,
each mutant changes one line, and each names tests that exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("stars_mutants", HERE / "mutants.py")
mutants = importlib.util.module_from_spec(_spec)
sys.modules["stars_mutants"] = mutants  # dataclasses look their module up
_spec.loader.exec_module(mutants)


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_once_and_names_its_tests(mutant):
    text = (REPO / mutant.file).read_text()
    assert text.count(mutant.old) == 1, mutant.file
    old, new = mutant.old.splitlines(), mutant.new.splitlines()
    assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1
    assert mutant.tests and all((REPO / t).is_file() for t in mutant.tests)


def test_mutant_names_are_unique():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
