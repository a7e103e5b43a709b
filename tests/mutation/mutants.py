"""One-line mutants of the wiring between settings, data splits and the computation.

Each mutant replaces ``old`` (which must occur exactly once in ``file``; context lines may be
included to make it unique, but only one line changes) by ``new``, and names the fast tests
that must fail when it is applied. ``tests/mutation/run.py`` applies them one at a time in a
temporary copy of the repository and prints which were killed.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFECT = "tests/train/test_settings_effect.py"
SETS = "tests/eval/test_protocol_sets.py"
SPLITS = "tests/data/test_split_disjointness.py"
STAGE2_UNIT = "tests/train/test_stage2_unit.py"
FEWSHOT = "tests/metrics/test_fewshot.py"
TRACKING = "tests/tracking/test_tracking.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    # -- the survivors of the audit ---------------------------------------------------------
    Mutant(
        "MAMP masks with temperature 0 (motion-aware masking off)",
        "stars/model/mamp.py",
        "motion_intensity(patches), self.cfg.mask_ratio, self.cfg.motion_tau, generator",
        "motion_intensity(patches), self.cfg.mask_ratio, 0.0, generator",
        (EFFECT,),
    ),
    Mutant(
        "NNCLR loss ignores its temperature",
        "stars/train/nnclr.py",
        "logits = nn_local @ p_all.T / temperature",
        "logits = nn_local @ p_all.T / 1.0",
        (EFFECT,),
    ),
    Mutant(
        "stage-2 optimiser built with layer decay 1.0: the swept rate has no effect",
        "stars/train/stage2.py",
        "groups = param_groups(self.model, self.cfg.optim.weight_decay, s2.layer_decay)",
        "groups = param_groups(self.model, self.cfg.optim.weight_decay, 1.0)",
        (EFFECT,),
    ),
    Mutant(
        "a sweep trial ignores stage2.layer_decay",
        "stars/sweep/trial.py",
        "        cfg = set_dotted(cfg, key, value)",
        '        cfg = cfg if key == "stage2.layer_decay" else set_dotted(cfg, key, value)',
        (EFFECT,),
    ),
    Mutant(
        "knn_val_top1's bank includes its held-out queries",
        "stars/eval/protocols.py",
        "return bank.subset(np.flatnonzero(~held)), bank.subset(np.flatnonzero(held))",
        "return bank, bank.subset(np.flatnonzero(held))",
        (SETS,),
    ),
    Mutant(
        "few-shot validation half equals the test half",
        "stars/metrics/fewshot.py",
        "return classes[0::2], classes[1::2]",
        "return classes[0::2], classes[0::2]",
        (SETS,),
    ),
    Mutant(
        "linear probe fitted on the test features",
        "stars/eval/protocols.py",
        "result = linear_probe(bank, query, ctx.data.num_classes",
        "result = linear_probe(query, query, ctx.data.num_classes",
        (SETS,),
    ),
    Mutant(
        "NTU cross-view trains on cameras 1 and 2",
        "stars/data/formats/ntu.py",
        "NTU60_XVIEW_TRAIN_CAMERAS = (2, 3)",
        "NTU60_XVIEW_TRAIN_CAMERAS = (1, 2)",
        (SPLITS,),
    ),
    Mutant(
        "NTU-120 few-shot classes start at action 60",
        "stars/data/formats/ntu.py",
        "if name.action > 60:",
        "if name.action >= 60:",
        (SPLITS,),
    ),
    Mutant(
        "the job pre-trains on the protocol's training split, not the few-shot one",
        "stars/data/job_data.py",
        "if not protocol and fewshot is not None and fewshot.pretrain_split:",
        "if False:",
        (SPLITS,),
    ),
    # -- the two accidental kills, now deliberate -------------------------------------------
    Mutant(
        "stage-2 positive is the sample's own projection, not a queue entry",
        "stars/train/stage2.py",
        "nn_z = queue.nearest(z.detach(), ids, cfg.topk, generator)",
        "nn_z = z.detach()",
        (EFFECT,),
    ),
    Mutant(
        "stage2-best alias moves on every trial",
        "stars/tracking/registry.py",
        "return value > float(tags[VALUE_TAG])",
        "return True",
        (TRACKING,),
    ),
    # -- further settings -------------------------------------------------------------------
    Mutant(
        "MAMP ignores mask_ratio",
        "stars/model/mamp.py",
        "motion_intensity(patches), self.cfg.mask_ratio, self.cfg.motion_tau, generator",
        "motion_intensity(patches), 0.9, self.cfg.motion_tau, generator",
        (EFFECT,),
    ),
    Mutant(
        "the stage-2 step passes the default temperature",
        "stars/train/stage2.py",
        "loss = nnclr_loss(nn_z, p, cfg.temperature, cfg.symmetric)",
        "loss = nnclr_loss(nn_z, p, 0.07, cfg.symmetric)",
        (EFFECT,),
    ),
    Mutant(
        "the stage-2 worker ignores queue_size",
        "stars/train/stage2.py",
        "self.queue = SupportQueue(s2.queue_size, encoder.cfg.dim)",
        "self.queue = SupportQueue(32768, encoder.cfg.dim)",
        (EFFECT,),
    ),
    Mutant(
        "the stage-2 worker ignores frozen_blocks",
        "stars/train/stage2.py",
        "TunedModel(encoder, s2.frozen_blocks, s2.predictor_hidden)",
        "TunedModel(encoder, -1, s2.predictor_hidden)",
        (EFFECT,),
    ),
    Mutant(
        "the scheduled learning rate is not applied",
        "stars/train/optim.py",
        'group["lr"] = lr * group.get("lr_scale", 1.0)',
        'group["lr"] = 1e-3 * group.get("lr_scale", 1.0)',
        (EFFECT,),
    ),
    Mutant(
        "a stage-1 sweep point ignores model.motion_tau",
        "stars/sweep/runner.py",
        "        cfg = set_dotted(cfg, key, value)",
        '        cfg = cfg if key == "model.motion_tau" else set_dotted(cfg, key, value)',
        (EFFECT,),
    ),
    Mutant(
        "warm-up ignored by the loop's schedule",
        "stars/train/optim.py",
        "steps_per_epoch * epochs, round(optim.warmup_epochs * steps_per_epoch), optim",
        "steps_per_epoch * epochs, 0, optim",
        (EFFECT,),
    ),
    Mutant(
        "the heads-only epochs of STARS-3stage are left out of the schedule",
        "stars/train/stage2.py",
        "epochs=s2.head_warmup_epochs + s2.epochs,",
        "epochs=s2.epochs,",
        (EFFECT,),
    ),
    Mutant(
        "the cosine schedule ends at 0 instead of min_lr",
        "stars/train/optim.py",
        "return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))",
        "return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))",
        (EFFECT,),
    ),
    Mutant(
        "the queue offers a sample its own past projection",
        "stars/train/nnclr.py",
        "invalid = (self.ids[None, :] == ids[:, None]) | (self.ids[None, :] < 0)",
        "invalid = self.ids[None, :] < 0",
        (STAGE2_UNIT, EFFECT),
    ),
    # -- protocols ----------------------------------------------------------------------------
    Mutant(
        "the kNN bank is the test split",
        "stars/eval/protocols.py",
        "    bank, query = ctx.features(ctx.train_split), ctx.features(ctx.test_split)\n"
        '    ctx.record_sets("knn"',
        "    bank, query = ctx.features(ctx.test_split), ctx.features(ctx.test_split)\n"
        '    ctx.record_sets("knn"',
        (SETS,),
    ),
    Mutant(
        "the stage-2 few-shot monitor reads the test half of the classes",
        "stars/train/stage2.py",
        "val, _ = validation_classes(bank.labels)",
        "_, val = validation_classes(bank.labels)",
        (SETS,),
    ),
    Mutant(
        "a few-shot episode's queries include its exemplars",
        "stars/metrics/fewshot.py",
        "rest = np.setdiff1d(np.arange(len(gallery)), exemplars)",
        "rest = np.arange(len(gallery))",
        (FEWSHOT, SETS),
    ),
    Mutant(
        "stage2-best alias moves on a tie",
        "stars/tracking/registry.py",
        "return value > float(tags[VALUE_TAG])",
        "return value >= float(tags[VALUE_TAG])",
        (TRACKING,),
    ),
    # -- the data layer -----------------------------------------------------------------------
    Mutant(
        "NTU cross-setup trains on odd setups",
        "stars/data/formats/ntu.py",
        'splits.add("xset_train" if name.setup % 2 == 0 else "xset_test")',
        'splits.add("xset_train" if name.setup % 2 == 1 else "xset_test")',
        (SPLITS,),
    ),
    Mutant(
        "NTU-120 cross-subject list has 44 for 45",
        "stars/data/formats/ntu.py",
        "    *NTU60_XSUB_TRAIN,\n    45,",
        "    *NTU60_XSUB_TRAIN,\n    44,",
        (SPLITS,),
    ),
    Mutant(
        "NTU-60 cross-subject list has 3 for 2",
        "stars/data/formats/ntu.py",
        "NTU60_XSUB_TRAIN = (1, 2, 4, 5,",
        "NTU60_XSUB_TRAIN = (1, 3, 4, 5,",
        (SPLITS,),
    ),
    Mutant(
        "NTU-60 pre-training pool takes NTU-120 setups too",
        "stars/data/formats/ntu.py",
        "in_ntu60 = name.setup <= 17 and name.action <= 60",
        "in_ntu60 = name.action <= 60",
        (SPLITS,),
    ),
    Mutant(
        "the ntu importer's NTU-120 pre-trains on all of x-sub train",
        "stars/data/formats/ntu.py",
        '"pretrain_split": "ntu60_xsub_train",',
        '"pretrain_split": "xsub_train",',
        (SPLITS,),
    ),
    Mutant(
        "the pyskl importer's NTU-120 pre-trains on all of x-sub train",
        "stars/data/formats/pyskl.py",
        '"pretrain_split": "ntu60_xsub_train",',
        '"pretrain_split": "xsub_train",',
        (SPLITS,),
    ),
    Mutant(
        "N-UCLA cross-view trains on views 1 and 3",
        "stars/data/formats/nucla.py",
        "XVIEW_TRAIN_VIEWS = (1, 2)",
        "XVIEW_TRAIN_VIEWS = (1, 3)",
        (SPLITS,),
    ),
    Mutant(
        "synthetic: the first novel class is also a pre-training class",
        "stars/data/synthetic.py",
        "if label >= spec.num_base_classes:",
        "if label > spec.num_base_classes:",
        (SPLITS,),
    ),
    Mutant(
        "arrays: every row in every split",
        "stars/data/formats/arrays.py",
        "max_bodies, frozenset({split})),",
        "max_bodies, frozenset(names)),",
        (SPLITS,),
    ),
)
