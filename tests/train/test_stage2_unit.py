"""Stage 2 without Ray: freezing, learning rates, weight decay, the queue, the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp_mp

from stars.model.config import preset
from stars.model.encoder import SkeletonEncoder
from stars.train.config import OptimConfig, Stage2Config
from stars.train.nnclr import SupportQueue, nnclr_loss
from stars.train.optim import build_adamw, param_groups, set_lr
from stars.train.stage2 import TunedModel, contrastive_step

CFG = preset("tiny", depth=4, num_heads=2)


def _model(seed=0, frozen=-1):
    torch.manual_seed(seed)
    return TunedModel(SkeletonEncoder(CFG), frozen, hidden=64)


def _batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, CFG.num_frames, CFG.num_joints, 3, generator=g)


def test_frozen_parameters_stay_bit_identical():
    model = _model()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    groups = param_groups(model, 0.01, 0.45)
    opt = build_adamw(groups, OptimConfig(lr=1e-2))
    queue = SupportQueue(16, CFG.dim)
    for step in range(3):
        loss = contrastive_step(
            model, queue, _batch(seed=step), torch.arange(6) + 6 * step, Stage2Config()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.encoder.state_dict()
    frozen = [k for k in before if model.is_frozen(k)]
    trained = [k for k in before if not model.is_frozen(k)]
    assert {k.split(".")[0] for k in frozen} == {
        "joints_embed",
        "temp_embed",
        "pos_embed",
        "blocks",
    }
    assert all(int(k.split(".")[1]) < 2 for k in frozen if k.startswith("blocks."))
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    # The frozen part runs without autograd: no grad tensors were ever created for it.
    assert all(p.grad is None for n, p in model.encoder.named_parameters() if model.is_frozen(n))


def test_decayed_learning_rates_and_weight_decay_reach_the_optimizer():
    model = _model()
    alpha, lr, depth = 0.45, 1e-3, CFG.depth
    groups = param_groups(model, 0.01, alpha)
    opt = build_adamw(groups, OptimConfig(lr=lr, weight_decay=0.01))
    set_lr(opt, lr)
    by_name = {}
    for group in opt.param_groups:
        for p in group["params"]:
            by_name[id(p)] = group
    names = dict(model.named_parameters())
    for name, p in names.items():
        if not p.requires_grad:
            assert id(p) not in by_name
            continue
        group = by_name[id(p)]
        if name.startswith("encoder.blocks."):
            i = int(name.split(".")[2])
            assert group["lr"] == pytest.approx(lr * alpha ** (depth - i)), name
        else:
            assert group["lr"] == pytest.approx(lr), name
        expected_wd = 0.0 if p.ndim <= 1 else 0.01
        assert group["weight_decay"] == expected_wd, name
    assert pytest.approx(lr * alpha) in [g["lr"] for g in opt.param_groups]  # block N-1
    assert pytest.approx(lr * alpha**2) in [g["lr"] for g in opt.param_groups]  # block N-2


def test_queue_wraps_around_for_any_batch_size():
    q = SupportQueue(5, 2)
    for start, n in ((0, 3), (3, 3), (6, 4)):
        ids = torch.arange(start, start + n)
        q.enqueue(ids[:, None].float().expand(n, 2), ids)
    # Writes: slots 0-2 <- 0,1,2; slots 3,4,0 <- 3,4,5; slots 1,2,3,4 <- 6,7,8,9.
    assert q.ids.tolist() == [5, 6, 7, 8, 9]
    assert int(q.ptr) == 0
    q.enqueue(torch.zeros(7, 2), torch.arange(100, 107))  # larger than the queue
    assert sorted(q.ids.tolist()) == [102, 103, 104, 105, 106]
    assert int(q.ptr) == 2


def test_nearest_neighbour_excludes_own_id_and_empty_slots():
    q = SupportQueue(4, 2)
    q.enqueue(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), torch.tensor([7, 8, 9]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([7, 9, 42])
    nn = q.nearest(z, ids)
    # Row 0 is sample 7: its own entry [1, 0] is skipped, [0.8, 0.6] is next best.
    assert nn[0].tolist() == pytest.approx([0.8, 0.6])
    assert nn[1].tolist() == pytest.approx([0.8, 0.6])
    assert nn[2].tolist() == pytest.approx([0.8, 0.6])
    empty = SupportQueue(3, 2)
    assert torch.equal(empty.nearest(z, ids), z)  # nothing valid yet: the projection itself
    g = torch.Generator().manual_seed(0)
    picks = {tuple(q.nearest(z[2:], ids[2:], topk=2, generator=g)[0].tolist()) for _ in range(30)}
    assert len(picks) == 2


def _reference_grads(x, ids, queue_state):
    model = _model(seed=5)
    queue = SupportQueue(8, CFG.dim)
    queue.load_state_dict(queue_state)
    loss = contrastive_step(model, queue, x, ids, Stage2Config(queue_size=8))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {k: v.numpy().copy() for k, v in queue.state_dict().items()}


def _distributed_worker(rank, world, rendezvous, x, ids, queue_state, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    # A file rendezvous: a port picked beforehand can be taken by another process (Ray's
    # workers bind ports all the time) before both workers have bound it.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    model = _model(seed=5)
    ddp = DistributedDataParallel(model)
    queue = SupportQueue(8, CFG.dim)
    queue.load_state_dict(queue_state)
    n = x.shape[0] // world
    local = slice(rank * n, (rank + 1) * n)
    loss = contrastive_step(ddp, queue, x[local], ids[local], Stage2Config(queue_size=8))
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    # numpy arrays travel by value (tensors would need this process alive)
    queue_state = {k: v.numpy().copy() for k, v in queue.state_dict().items()}
    if rank == 0:
        grads = {
            k: v.grad.numpy().copy() for k, v in model.named_parameters() if v.grad is not None
        }
        out.put((rank, float(total) / world, grads, queue_state))
    else:
        out.put((rank, None, None, queue_state))
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_workers_match_one_process_on_the_concatenated_batch(tmp_path):
    x, ids = _batch(8, seed=3), torch.arange(8)
    queue = SupportQueue(8, CFG.dim)
    g = torch.Generator().manual_seed(2)
    queue.enqueue(
        torch.nn.functional.normalize(torch.randn(8, CFG.dim, generator=g), dim=1),
        torch.tensor([0, 1, 2, 3, 20, 21, 22, 23]),
    )
    ref_loss, ref_grads, ref_queue = _reference_grads(x, ids, queue.state_dict())
    ctx = tmp_mp.get_context("spawn")
    out = ctx.Queue()
    rendezvous = tmp_path / "rendezvous"
    procs = [
        ctx.Process(
            target=_distributed_worker, args=(r, 2, rendezvous, x, ids, queue.state_dict(), out)
        )
        for r in range(2)
    ]
    for p in procs:
        p.start()
    try:
        results = sorted((out.get(timeout=120) for _ in procs), key=lambda r: r[0])
        (_, loss, grads, _), queues = results[0], [r[3] for r in results]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:  # never leave a worker behind, whatever failed
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert loss == pytest.approx(float(ref_loss), rel=1e-5)
    assert grads.keys() == ref_grads.keys()
    # Float32 sums in a different order: agreement to ~1e-5 absolute. The encoder's last norm
    # bias shifts every feature of a BatchNorm batch alike, so its true gradient is 0 and each
    # run holds only rounding noise, up to ~5e-5 here: two such draws differ by up to twice that.
    noise_only = {"encoder.norm.bias": 2e-4}
    for name, grad in grads.items():
        torch.testing.assert_close(
            torch.from_numpy(grad),
            ref_grads[name],
            rtol=1e-3,
            atol=noise_only.get(name, 5e-5),
            msg=name,
        )
    # Every rank's queue received the whole global batch, in rank order: the same queue as
    # one process that saw the concatenated batch.
    for state in queues:
        assert state.keys() == ref_queue.keys()
        for key, value in state.items():
            np.testing.assert_allclose(value, ref_queue[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_symmetric_loss_option():
    torch.manual_seed(0)
    nn_z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    p = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    one = nnclr_loss(nn_z, p, 0.07)
    both = nnclr_loss(nn_z, p, 0.07, symmetric=True)
    other = torch.nn.functional.cross_entropy(p @ nn_z.T / 0.07, torch.arange(4))
    torch.testing.assert_close(both, 0.5 * (one + other))
