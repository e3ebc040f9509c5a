"""Losses of the paper (eq. 3–4): batch-hard triplet + label-smoothed cross-entropy.

``ReidLoss`` = ``triplet_weight`` · batch-hard triplet (on the pre-neck features) + ``ce_weight`` ·
cross-entropy with label smoothing (on the logits); the paper uses 10 : 1, margin 0.3, ε 0.1.
Both are computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def euclidean_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances of the rows of ``x`` (B, D) → (B, B), float32.

    Squared distances are clamped at 1e-12 before the square root so the gradient stays finite
    for identical rows (and on the diagonal).
    """
    x = x.float()
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(1e-12).sqrt()


def hardest_pairs(
    distances: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining.

    Args:
        distances: (B, B) pairwise distances.
        labels: (B,) identity labels.

    Returns:
        ``(d_ap, d_an, valid)``, each (B,): the distance to the farthest positive (another sample with
        the anchor's label; the anchor itself when it has none), to the nearest negative, and
        whether the anchor has any negative in the batch.
    """
    same = labels[:, None] == labels[None, :]
    d_ap = distances.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = distances.masked_fill(same, float("inf")).amin(dim=1)
    valid = (~same).any(dim=1)
    return d_ap, d_an, valid


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) with Euclidean distances.

    For each anchor a: ``[m + max_p D(a, p) − min_n D(a, n)]_+`` (or ``softplus(max_p − min_n)``
    with ``soft_margin``), averaged over the anchors that have a negative in the batch.

    Args:
        margin: m (paper: 0.3).
        soft_margin: use ``log(1 + exp(·))`` instead of the hinge with margin.
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.soft_margin = soft_margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``features`` (B, D), ``labels`` (B,) → scalar loss (0 when no anchor has a negative)."""
        d_ap, d_an, valid = hardest_pairs(euclidean_distances(features), labels)
        if not bool(valid.any()):
            return features.float().sum() * 0.0
        d_ap, d_an = d_ap[valid], d_an[valid]
        if self.soft_margin:
            return F.softplus(d_ap - d_an).mean()
        return F.relu(d_ap - d_an + self.margin).mean()


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing (Szegedy et al. 2016).

    Target q_i = 1 − ε + ε/N for the true class, ε/N otherwise; loss = −Σ_i q_i log p_i, averaged
    over the batch.

    Args:
        epsilon: ε (paper: 0.1).
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1) (got {epsilon})")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, N), ``labels`` (B,) int64 → scalar loss."""
        log_probs = F.log_softmax(logits.float(), dim=1)
        nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
        uniform = -log_probs.mean(dim=1)
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()


class ReidLoss(nn.Module):
    """``triplet_weight`` · TripletLoss(features) + ``ce_weight`` · CrossEntropyLabelSmooth(logits).

    Returns ``(total, {"triplet": …, "ce": …})``; the parts are detached scalars (unweighted).
    """

    def __init__(
        self,
        triplet_weight: float = 10.0,
        ce_weight: float = 1.0,
        margin: float = 0.3,
        epsilon: float = 0.1,
        soft_margin: bool = False,
    ) -> None:
        super().__init__()
        self.triplet_weight = triplet_weight
        self.ce_weight = ce_weight
        self.triplet = TripletLoss(margin=margin, soft_margin=soft_margin)
        self.ce = CrossEntropyLabelSmooth(epsilon=epsilon)

    def forward(
        self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``features`` (B, D) pre-neck, ``logits`` (B, N), ``labels`` (B,) → ``(total, parts)``."""
        triplet = self.triplet(features, labels)
        ce = self.ce(logits, labels)
        total = self.triplet_weight * triplet + self.ce_weight * ce
        return total, {"triplet": triplet.detach(), "ce": ce.detach()}
