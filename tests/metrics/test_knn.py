from __future__ import annotations

import torch
import torch.nn.functional as F

from stars.metrics.knn import accuracies, knn_predict, weighted_knn_correct


def _brute_force(bank, bank_labels, query, k, temperature, num_classes):
    b = F.normalize(bank, dim=1)
    out = []
    for q in F.normalize(query, dim=1):
        sims = torch.tensor([float(q @ row) for row in b])
        order = sorted(range(len(sims)), key=lambda i: -float(sims[i]))[:k]
        votes = [0.0] * num_classes
        for i in order:
            w = 1.0 if temperature is None else float(torch.exp(sims[i] / temperature))
            votes[int(bank_labels[i])] += w
        out.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(out)


def test_knn_matches_brute_force_with_blocks():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(300, 16, generator=gen)
    labels = torch.randint(0, 7, (300,), generator=gen)
    query = torch.randn(90, 16, generator=gen)
    for k, temp in [(1, None), (5, None), (10, 0.1), (40, 0.1)]:
        fast = knn_predict(bank, labels, query, k, temp, 7, block=32)
        assert torch.equal(fast, _brute_force(bank, labels, query, k, temp, 7)), (k, temp)


def test_knn_report_names_and_perfect_case():
    centres = torch.eye(4, 8) * 10
    labels = torch.arange(4).repeat_interleave(10)
    bank = centres[labels] + 0.01 * torch.randn(40, 8)
    report = accuracies(weighted_knn_correct(bank, labels, bank + 0.001, labels))
    assert set(report) == {
        "knn_top1",
        "knn_weighted_k10_top1",
        "knn_weighted_k20_top1",
        "knn_weighted_k40_top1",
    }
    assert report["knn_top1"] == 1.0
