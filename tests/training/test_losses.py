"""Losses against brute-force formulas written from the definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vreid.engine.losses import CrossEntropyLabelSmooth, ReidLoss, TripletLoss


def brute_batch_hard(feats: torch.Tensor, labels: list[int], margin: float, soft: bool) -> float:
    x = feats.double().tolist()
    losses = []
    for a in range(len(x)):

        def dist(i: int, j: int) -> float:
            return math.sqrt(sum((u - v) ** 2 for u, v in zip(x[i], x[j], strict=True)))

        pos = [dist(a, p) for p in range(len(x)) if labels[p] == labels[a]]  # includes a itself
        neg = [dist(a, n) for n in range(len(x)) if labels[n] != labels[a]]
        if not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(math.log1p(math.exp(gap)) if soft else max(0.0, margin + gap))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_matches_brute_force(seed: int, soft: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(12, 5, generator=g)
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    loss = TripletLoss(margin=0.3, soft_margin=soft)(feats, torch.tensor(labels))
    assert loss.item() == pytest.approx(brute_batch_hard(feats, labels, 0.3, soft), rel=1e-5)


def test_triplet_is_batch_hard_not_all_triplets() -> None:
    # anchor 0: positives at distance 1 and 3, negatives at 2 and 10 → hinge(0.3 + 3 − 2) = 1.3
    feats = torch.tensor([[0.0], [1.0], [3.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    loss = TripletLoss(margin=0.3)(feats, labels)
    assert loss.item() == pytest.approx(
        brute_batch_hard(feats, labels.tolist(), 0.3, False), rel=1e-6
    )
    # a batch where every anchor is satisfied by more than the margin gives exactly 0
    far = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    assert TripletLoss(0.3)(far, torch.tensor([0, 0, 1, 1])).item() == 0.0


def test_triplet_single_identity_and_duplicate_rows_are_finite() -> None:
    feats = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(feats, torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0
    dup = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    loss = TripletLoss()(dup, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(dup.grad).all()


def test_label_smoothing_cross_entropy_matches_formula() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, generator=g)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    eps, n = 0.1, 5
    expected = 0.0
    for row, y in zip(logits.double(), labels.tolist(), strict=True):
        p = torch.softmax(row, 0)
        q = [1 - (n - 1) / n * eps if i == y else eps / n for i in range(n)]  # the paper's q_i
        expected += -sum(qi * math.log(pi) for qi, pi in zip(q, p.tolist(), strict=True))
    expected /= len(labels)
    got = CrossEntropyLabelSmooth(eps)(logits, labels)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(got, F.cross_entropy(logits, labels, label_smoothing=eps))
    assert CrossEntropyLabelSmooth(0.0)(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


def test_reid_loss_weights_the_parts() -> None:
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(8, 4, generator=g, requires_grad=True)
    logits = torch.randn(8, 3, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    total, parts = ReidLoss()(feats, logits, labels)
    assert set(parts) == {"triplet", "ce"}
    t = TripletLoss(0.3)(feats, labels)
    c = CrossEntropyLabelSmooth(0.1)(logits, labels)
    torch.testing.assert_close(parts["triplet"], t.detach())
    torch.testing.assert_close(parts["ce"], c.detach())
    torch.testing.assert_close(total, 10 * t + 1 * c)
    total2, _ = ReidLoss(triplet_weight=2.0, ce_weight=0.5, margin=1.0, epsilon=0.0)(
        feats, logits, labels
    )
    torch.testing.assert_close(
        total2, 2 * TripletLoss(1.0)(feats, labels) + 0.5 * F.cross_entropy(logits, labels)
    )
    total.backward()
    assert feats.grad.abs().sum() > 0
    assert logits.grad.abs().sum() > 0


def test_losses_run_in_float32_under_half_inputs() -> None:
    feats = torch.randn(6, 4).half()
    logits = torch.randn(6, 3).bfloat16()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    total, parts = ReidLoss()(feats, logits, labels)
    assert total.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in parts.values())
    assert math.isfinite(total.item())


def test_all_triplets_hinge_upper_bounded_by_batch_hard() -> None:
    # batch-hard picks the worst triplet per anchor: its hinge ≥ every triplet's hinge of that anchor
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(6, 3, generator=g)
    labels = [0, 0, 0, 1, 1, 1]
    d = torch.cdist(feats, feats)
    batch_hard = TripletLoss(0.3)(feats, torch.tensor(labels)).item()
    per_anchor_max = []
    for a in range(6):
        hinges = [
            max(0.0, 0.3 + d[a, p].item() - d[a, n].item())
            for p, n in itertools.product(range(6), range(6))
            if labels[p] == labels[a] and labels[n] != labels[a]
        ]
        per_anchor_max.append(max(hinges))
    assert batch_hard == pytest.approx(sum(per_anchor_max) / 6, rel=1e-5)
