"""The manifest is parsed and validated once, into a frozen value that writes back unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stars.data.manifest import DataError, FewshotSplit, Manifest, SplitPair
from stars.data.shards import MANIFEST_NAME


def test_a_written_manifest_parses_to_typed_fields_and_writes_back_the_same(tiny_dataset):
    raw = json.loads((tiny_dataset.root / MANIFEST_NAME).read_text())
    manifest = Manifest.from_json(raw, "manifest.json")
    assert manifest == tiny_dataset.manifest
    assert manifest.to_json() == raw
    assert isinstance(manifest.fewshot, FewshotSplit) and manifest.fewshot.classes
    assert all(isinstance(p, SplitPair) for p in manifest.protocols.values())
    assert manifest.recording["format"] == "synthetic"
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.num_samples = 1  # type: ignore[misc]


def test_a_dataset_without_held_out_classes_has_no_fewshot_split(tiny_dataset):
    raw = json.loads((tiny_dataset.root / MANIFEST_NAME).read_text())
    raw["fewshot"] = None
    assert Manifest.from_json(raw, "m.json").fewshot is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("splits"), "lacks the key 'splits'"),
        (lambda m: m.update(schema_version=99), "schema version 99 is not supported"),
        (lambda m: m["layout"].update(name="ntu99"), "malformed entry.*unknown joint layout"),
        (lambda m: m["layout"].update(num_joints=7), "layout ntu25 has 25 joints"),
        (lambda m: m["protocols"]["xsub"].pop("test"), "malformed entry.*KeyError"),
        (lambda m: m["shards"][0].update(rows="many"), "malformed entry.*ValueError"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_the_file(tiny_dataset, edit, message):
    raw = json.loads((tiny_dataset.root / MANIFEST_NAME).read_text())
    edit(raw)
    with pytest.raises(DataError, match=rf"^data/manifest\.json.*{message}"):
        Manifest.from_json(raw, "data/manifest.json")
