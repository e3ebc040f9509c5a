"""Choosing the one vehicle box that best explains each image, and turning it into a crop box.

A re-id image shows one vehicle, usually large and near the centre, sometimes with parts of other
vehicles at its borders. Among the detections of a vehicle class with confidence ≥ ``min_score``,
each candidate gets the score

    s = c · √a · (1 − d)

* ``c`` — the detector's confidence, in [0, 1];
* ``a`` — the box area (clipped to the image) over the image area, in [0, 1]; the square root makes
  the term proportional to the box's linear size, so a box twice as wide and tall counts double,
  not four times, and a confident mid-sized box can beat a doubtful huge one;
* ``d`` — the distance from the box centre to the image centre over half the image diagonal, in
  [0, 1]; a centred box has ``1 − d = 1``, a box centred on a corner 0.

Area and centre are those of the box clipped to the image.

The candidate with the highest ``s`` wins (ties: the first in the detector's order). Its box is
enlarged by ``margin`` × its width on the left and on the right and ``margin`` × its height at the
top and the bottom, clipped to the image, and rounded outwards to whole pixels. Images without a
candidate keep the whole image and are flagged as not found.

Everything is vectorised over all detections of a batch of images (no loop over images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Selection:
    """The chosen crop of each image of a batch of ``B`` images."""

    crop_boxes: Tensor
    """(B, 4) int64 ``x1, y1, x2, y2`` pixel box to crop (PIL convention: x2, y2 exclusive);
    the whole image where nothing was found."""
    found: Tensor
    """(B,) bool: a vehicle box was chosen."""
    confidence: Tensor
    """(B,) float: detector confidence of the chosen box (0 where none)."""
    detection: Tensor
    """(B, 4) float: the chosen detection box before the margin (the whole image where none)."""


def selection_scores(boxes: Tensor, confidence: Tensor, image_sizes: Tensor) -> Tensor:
    """The score ``c · √a · (1 − d)`` of each box (see the module docstring).

    ``boxes`` (N, 4) ``x1, y1, x2, y2``; ``confidence`` (N,); ``image_sizes`` (N, 2) ``(height,
    width)`` of the image each box belongs to. Returns (N,) float scores in [0, 1].
    """
    boxes = boxes.float()
    height = image_sizes[:, 0].to(boxes)
    width = image_sizes[:, 1].to(boxes)
    x1 = boxes[:, 0].clamp(min=0).minimum(width)
    x2 = boxes[:, 2].clamp(min=0).minimum(width)
    y1 = boxes[:, 1].clamp(min=0).minimum(height)
    y2 = boxes[:, 3].clamp(min=0).minimum(height)
    area_fraction = ((x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)) / (width * height)
    dx = (x1 + x2) / 2 - width / 2
    dy = (y1 + y2) / 2 - height / 2
    half_diagonal = torch.sqrt(width**2 + height**2) / 2
    centre_distance = (torch.sqrt(dx**2 + dy**2) / half_diagonal).clamp(max=1)
    return confidence.float() * area_fraction.sqrt() * (1 - centre_distance)


def expand_boxes(boxes: Tensor, image_sizes: Tensor, margin: float) -> Tensor:
    """Add ``margin`` × width/height on each side, clip to the image, round outwards.

    ``boxes`` (B, 4) float, ``image_sizes`` (B, 2) ``(height, width)``. Returns (B, 4) int64 boxes
    with at least one pixel in each direction.
    """
    # Float64 so that rounding to whole pixels is exact to double precision: in float32 a
    # coordinate within 1e-7 of an integer could floor/ceil to the neighbouring pixel.
    boxes = boxes.double()
    height = image_sizes[:, 0].to(boxes)
    width = image_sizes[:, 1].to(boxes)
    box_w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    box_h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    x1 = torch.floor(boxes[:, 0] - margin * box_w).clamp(min=0).minimum(width - 1)
    y1 = torch.floor(boxes[:, 1] - margin * box_h).clamp(min=0).minimum(height - 1)
    x2 = torch.ceil(boxes[:, 2] + margin * box_w).minimum(width).maximum(x1 + 1)
    y2 = torch.ceil(boxes[:, 3] + margin * box_h).minimum(height).maximum(y1 + 1)
    return torch.stack([x1, y1, x2, y2], dim=1).long()


def select_boxes(
    boxes: Tensor,
    confidence: Tensor,
    labels: Tensor,
    image_index: Tensor,
    image_sizes: Tensor,
    *,
    vehicle_labels: Sequence[int],
    min_score: float = 0.5,
    margin: float = 0.05,
) -> Selection:
    """Choose one crop box per image from the detections of a batch.

    Args:
        boxes: (N, 4) detection boxes ``x1, y1, x2, y2`` in pixels, all images of the batch together.
        confidence: (N,) detector confidences.
        labels: (N,) detector class labels.
        image_index: (N,) int64 index of the image (0…B-1) each detection belongs to.
        image_sizes: (B, 2) ``(height, width)`` of each image.
        vehicle_labels: labels that count as a vehicle (COCO car/bus/truck, or our 'vehicle').
        min_score: confidences below this are ignored.
        margin: fraction of the box's width/height added on each side.
    """
    image_sizes = image_sizes.long().cpu()
    num_images = image_sizes.shape[0]
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    confidence = confidence.detach().float().cpu().reshape(-1)
    labels = labels.detach().long().cpu().reshape(-1)
    image_index = image_index.detach().long().cpu().reshape(-1)

    is_vehicle = torch.isin(labels, torch.tensor(list(vehicle_labels), dtype=torch.long))
    candidate = is_vehicle & (confidence >= min_score)
    score = selection_scores(boxes, confidence, image_sizes[image_index])
    score = torch.where(candidate, score, torch.full_like(score, -1.0))

    best = torch.full((num_images,), -1.0).scatter_reduce(
        0, image_index, score, reduce="amax", include_self=True
    )
    winner = candidate & (score == best[image_index])
    detection_count = boxes.shape[0]
    first = torch.full((num_images,), detection_count, dtype=torch.long).scatter_reduce(
        0,
        image_index[winner],
        torch.arange(detection_count)[winner],
        reduce="amin",
        include_self=True,
    )
    found = first < detection_count

    whole = torch.zeros(num_images, 4)
    whole[:, 2] = image_sizes[:, 1].float()
    whole[:, 3] = image_sizes[:, 0].float()
    chosen = whole.clone()
    chosen[found] = boxes[first[found]]
    chosen_confidence = torch.zeros(num_images)
    chosen_confidence[found] = confidence[first[found]]
    crop = expand_boxes(chosen, image_sizes, margin)
    crop[~found] = whole[~found].long()
    return Selection(crop_boxes=crop, found=found, confidence=chosen_confidence, detection=chosen)


def flatten_detections(
    outputs: Sequence[dict[str, Tensor]],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Concatenate torchvision's per-image detection dicts into ``(boxes (N, 4), scores (N,),
    labels (N,), image_index (N,))`` for :func:`select_boxes`."""
    if not outputs:
        empty = torch.zeros(0)
        return empty.reshape(0, 4), empty, empty.long(), empty.long()
    boxes = torch.cat([o["boxes"].detach().float().cpu().reshape(-1, 4) for o in outputs])
    scores = torch.cat([o["scores"].detach().float().cpu() for o in outputs])
    labels = torch.cat([o["labels"].detach().long().cpu() for o in outputs])
    counts = torch.tensor([len(o["scores"]) for o in outputs])
    image_index = torch.repeat_interleave(torch.arange(len(outputs)), counts)
    return boxes, scores, labels, image_index


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of matching rows of two (N, 4) box tensors → (N,)."""
    a = a.float()
    b = b.float()
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)
