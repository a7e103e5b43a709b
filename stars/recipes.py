"""One named recipe per published STARS result, and the paper's numbers in one table.

A recipe is the ``paper`` preset plus the released configs' per-dataset values (masking
temperature tau1, layer-decay rate alpha), the dataset protocol the row is measured on, and
the import that produces that dataset. ``jobs/pretrain.py --recipe NAME --data DIR`` runs it;
its summary prints each published number beside the measured one.

Precedence in the main job: dataclass defaults < preset < recipe < ``--config`` < ``--set`` <
flags, so a recipe is a starting point a user can still change.

Sources of the numbers (top-1 %, linear probe and k=1 kNN on the frozen encoder, fine-tuning):
STARS: Mehraban et al. 2024, arXiv 2407.10935, Tables 1-3; MAMP: Mao et al., ICCV 2023,
Tables 1-3, as quoted by STARS. The per-dataset values are those of the configs released with
the STARS code (``docs/method.md``, sections 6-7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stars.config import ConfigError

STARS_PAPER = "STARS (arXiv 2407.10935)"
MAMP_PAPER = "MAMP (ICCV 2023), quoted by STARS"


@dataclass(frozen=True)
class PaperResult:
    """One published number: ``stage`` (``stage1`` = MAMP pre-training, ``stage2`` = STARS)
    and ``metric`` as this platform names it; ``value`` in %."""

    stage: str
    metric: str
    value: float
    source: str
    table: str


@dataclass(frozen=True)
class Recipe:
    """A published row: the settings and data that reproduce it, and what it reported.

    Attributes:
        protocol: the dataset's train/test pair (``data.protocol``; '' = the few-shot
            protocol's pre-training split, which a dataset with a few-shot split trains on).
        num_classes: the class count of the dataset the recipe expects.
        prepare: how to import that dataset (a ``jobs/prepare_data.py`` command).
        stage1 / stage2 / eval: dotted overrides of those sections, over the preset.
        gpu_hours: the expected cost, as the papers report it (stage 1 dominates).
    """

    name: str
    description: str
    protocol: str
    num_classes: int
    prepare: str
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    results: tuple[PaperResult, ...] = ()
    gpu_hours: str = ""
    preset: str = "paper"


# The released configs' per-dataset values (docs/method.md, sections 6-7).
NTU60 = {"stage1": {"model.motion_tau": 0.80}, "stage2": {"stage2.layer_decay": 0.45}}
NTU120 = {"stage1": {"model.motion_tau": 0.75}, "stage2": {"stage2.layer_decay": 0.40}}
PKU = {"stage1": {"model.motion_tau": 0.80}, "stage2": {"stage2.layer_decay": 0.35}}
# The paper's scale: global batch 128 = 4 workers x 32 (the preset's per-worker batch).
PAPER_SCALE = {"scale.num_workers": 4, "scale.use_gpu": True}
FEATURE_EVAL = {"protocols": ["knn", "linear", "fewshot", "cluster", "tsne"]}


def _rows(table: str, linear: tuple[float, float], knn: float | None, finetune=None):
    """(MAMP, STARS) linear, STARS kNN and (MAMP, STARS) fine-tune as PaperResults."""
    rows = [
        PaperResult("stage1", "linear_top1", linear[0], MAMP_PAPER, table),
        PaperResult("stage2", "linear_top1", linear[1], STARS_PAPER, table),
    ]
    if knn is not None:
        rows.append(PaperResult("stage2", "knn_top1", knn, STARS_PAPER, table))
    if finetune is not None:
        rows += [
            PaperResult("stage1", "finetune_top1", finetune[0], MAMP_PAPER, "Table 3"),
            PaperResult("stage2", "finetune_top1", finetune[1], STARS_PAPER, "Table 3"),
        ]
    return tuple(rows)


NTU60_PREPARE = "prepare_data.py pyskl ntu60_3danno.pkl --out DIR (or: ntu nturgb+d_skeletons/)"
NTU120_PREPARE = (
    "prepare_data.py pyskl ntu120_3danno.pkl --out DIR (or: ntu nturgb+d_skeletons_120/)"
)
STAGE1_NTU60_GPU_HOURS = "about 20 GPU-hours on one RTX 4090 for stage 1 (MAMP); stage 2 ~2 %"

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "ntu60-xsub",
            "NTU-60 cross-subject: Tables 1-3",
            "xsub",
            60,
            NTU60_PREPARE,
            stage1={**NTU60["stage1"], **PAPER_SCALE},
            stage2={**NTU60["stage2"], **PAPER_SCALE},
            eval=FEATURE_EVAL,
            results=_rows("Tables 1-2", (84.9, 87.1), 79.9, (93.1, 93.0)),
            gpu_hours=STAGE1_NTU60_GPU_HOURS,
        ),
        Recipe(
            "ntu60-xview",
            "NTU-60 cross-view: Tables 1-3",
            "xview",
            60,
            NTU60_PREPARE,
            stage1={**NTU60["stage1"], **PAPER_SCALE},
            stage2={**NTU60["stage2"], **PAPER_SCALE},
            eval=FEATURE_EVAL,
            results=_rows("Tables 1-2", (89.1, 90.9), 88.6, (97.5, 97.5)),
            gpu_hours=STAGE1_NTU60_GPU_HOURS,
        ),
        Recipe(
            "ntu120-xsub",
            "NTU-120 cross-subject: Tables 1-3",
            "xsub",
            120,
            NTU120_PREPARE,
            stage1={**NTU120["stage1"], **PAPER_SCALE},
            stage2={**NTU120["stage2"], **PAPER_SCALE},
            eval=FEATURE_EVAL,
            results=_rows("Tables 1-2", (78.6, 79.9), 67.6, (90.0, 89.9)),
            gpu_hours="about 2x the NTU-60 time (twice the training sequences)",
        ),
        Recipe(
            "ntu120-xset",
            "NTU-120 cross-setup: Tables 1-3",
            "xset",
            120,
            NTU120_PREPARE,
            stage1={**NTU120["stage1"], **PAPER_SCALE},
            stage2={**NTU120["stage2"], **PAPER_SCALE},
            eval=FEATURE_EVAL,
            results=_rows("Tables 1-2", (79.1, 80.8), 67.7, (91.3, 91.4)),
            gpu_hours="about 2x the NTU-60 time (twice the training sequences)",
        ),
        Recipe(
            "pku2-xsub",
            "PKU-MMD II cross-subject: Table 1",
            "xsub",
            51,
            "prepare_data.py npz PKUv2_XSub.npz --out DIR (or: pku PKU_Skeleton_Renew/ ...)",
            stage1={**PKU["stage1"], **PAPER_SCALE},
            stage2={**PKU["stage2"], **PAPER_SCALE},
            eval=FEATURE_EVAL,
            results=_rows("Table 1", (53.8, 52.7), None),
            gpu_hours="a few GPU-hours (PKU-MMD II is about 1/8 of NTU-60's training set)",
        ),
        Recipe(
            "fewshot-ntu60-ntu120",
            "few-shot: pre-train and tune on NTU-60 x-sub, n-shot on NTU-120's 60 novel "
            "actions (61-120)",
            "",
            120,
            NTU120_PREPARE + "; the NTU-120 import holds NTU-60 x-sub and the novel actions",
            stage1={**NTU60["stage1"], **PAPER_SCALE},
            stage2={**NTU60["stage2"], **PAPER_SCALE},
            eval={"protocols": ["knn", "fewshot"], "fewshot_shots": [1, 2, 5]},
            # The few-shot table's numbers are not in the sources this repository holds, so
            # none is shown rather than one typed from memory.
            results=(),
            gpu_hours=STAGE1_NTU60_GPU_HOURS,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def check_dataset(recipe: Recipe, num_classes: int, protocols: list[str], fewshot: bool) -> None:
    """Refuse a dataset the recipe's row was not measured on, saying which import it needs."""
    problem = ""
    if num_classes != recipe.num_classes:
        problem = f"has {num_classes} classes, the recipe's dataset {recipe.num_classes}"
    elif recipe.protocol and recipe.protocol not in protocols:
        problem = f"has no protocol {recipe.protocol!r} (it has {', '.join(protocols) or 'none'})"
    elif not recipe.protocol and not fewshot:
        problem = "has no few-shot split (the NTU-120 import makes one)"
    if problem:
        raise ConfigError(
            f"recipe {recipe.name}: the dataset {problem}; import it with {recipe.prepare}"
        )


def paper_rows(recipe: Recipe, measured: dict[str, dict[str, float]]) -> list[list[str]]:
    """Each published number beside the measured one (``measured``: stage -> metrics, as
    fractions with their ``_ci95_low/high``), and the difference in points."""
    rows = [["stage", "metric", "paper", "measured (95 % interval)", "measured - paper", "source"]]
    for r in recipe.results:
        got = measured.get(r.stage, {})
        if r.metric not in got:
            rows.append([r.stage, r.metric, f"{r.value:.1f}", "not run", "-", r.source])
            continue
        value = 100 * got[r.metric]
        low, high = got.get(f"{r.metric}_ci95_low"), got.get(f"{r.metric}_ci95_high")
        shown = f"{value:.1f}"
        if low is not None and high is not None:
            shown += f" [{100 * low:.1f}, {100 * high:.1f}]"
        rows.append(
            [
                r.stage,
                r.metric,
                f"{r.value:.1f}",
                shown,
                f"{value - r.value:+.1f}",
                f"{r.source}, {r.table}",
            ]
        )
    return rows
