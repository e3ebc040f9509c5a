"""The box-selection rule on hand-made detections (no detector involved)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vreid.inference.select import (
    box_iou,
    expand_boxes,
    flatten_detections,
    select_boxes,
    selection_scores,
)

COCO_VEHICLES = (3, 6, 8)  # car, bus, truck in torchvision's COCO category list


def _select(dets, sizes, **kw):
    """dets: list (per image) of lists of (x1, y1, x2, y2, confidence, label)."""
    outputs = [
        {
            "boxes": torch.tensor([d[:4] for d in img], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([d[4] for d in img], dtype=torch.float32),
            "labels": torch.tensor([d[5] for d in img], dtype=torch.long),
        }
        for img in dets
    ]
    boxes, scores, labels, index = flatten_detections(outputs)
    kw.setdefault("vehicle_labels", COCO_VEHICLES)
    return select_boxes(boxes, scores, labels, index, torch.tensor(sizes), **kw)


def test_score_formula_values():
    sizes = torch.tensor([[100, 200]] * 4)
    boxes = torch.tensor(
        [
            [0.0, 0.0, 200.0, 100.0],  # whole image, centred: a = 1, d = 0
            [50.0, 25.0, 150.0, 75.0],  # centred, a quarter of the area: sqrt(a) = 0.5
            [-10.0, -5.0, 10.0, 5.0],  # clipped to (0, 0, 10, 5): a = 1/400, d = 0.95
            [0.0, 0.0, 100.0, 50.0],  # top-left quarter: a = 1/4, d = 1/2
        ]
    )
    conf = torch.tensor([1.0, 0.8, 1.0, 1.0])
    s = selection_scores(boxes, conf, sizes)
    assert s[0].item() == pytest.approx(1.0)
    assert s[1].item() == pytest.approx(0.8 * 0.5)
    assert s[2].item() == pytest.approx(0.05 * 0.05)
    assert s[3].item() == pytest.approx(0.5 * 0.5)


def test_picks_the_central_car_over_corner_truck_and_person():
    # 300 wide, 260 high. A person box is the largest and most confident but not a vehicle.
    dets = [
        [
            (0, 0, 300, 260, 0.99, 1),  # person
            (0, 0, 60, 50, 0.99, 8),  # small truck in the corner
            (50, 60, 250, 200, 0.90, 3),  # large central car
        ]
    ]
    sel = _select(dets, [[260, 300]], margin=0.05)
    assert sel.found.tolist() == [True]
    assert sel.confidence[0].item() == pytest.approx(0.9)
    assert sel.detection[0].tolist() == [50, 60, 250, 200]
    # w = 200, h = 140: 10 px left/right, 7 px top/bottom.
    assert sel.crop_boxes[0].tolist() == [40, 53, 260, 207]


def test_confident_mid_box_beats_doubtful_huge_box():
    # huge box: 0.55 * sqrt(1.0) * 1 = 0.55; mid box (half width/height, centred): 0.95 * 0.5 = 0.475
    # → the huge one wins here; lower its confidence to 0.45 (< min_score 0.5) and the mid one wins.
    dets = [
        [(0, 0, 200, 200, 0.55, 3), (50, 50, 150, 150, 0.95, 3)],
        [(0, 0, 200, 200, 0.45, 3), (50, 50, 150, 150, 0.95, 3)],
    ]
    sel = _select(dets, [[200, 200], [200, 200]], margin=0.0)
    assert sel.detection[0].tolist() == [0, 0, 200, 200]
    assert sel.detection[1].tolist() == [50, 50, 150, 150]


def test_nothing_found_keeps_whole_image():
    dets = [[(10, 10, 50, 50, 0.3, 3), (0, 0, 90, 90, 0.99, 1)], []]
    sel = _select(dets, [[100, 120], [64, 32]], min_score=0.5)
    assert sel.found.tolist() == [False, False]
    assert sel.crop_boxes.tolist() == [[0, 0, 120, 100], [0, 0, 32, 64]]
    assert sel.confidence.tolist() == [0.0, 0.0]


def test_margin_is_clipped_to_the_image_and_rounded_outwards():
    dets = [[(2.5, 90.2, 60.4, 99.0, 0.9, 6)]]
    sel = _select(dets, [[100, 64]], margin=0.1)
    # w = 57.9 → 5.79 px, h = 8.8 → 0.88 px. x1 = floor(-3.29) → 0, y1 = floor(89.32) = 89,
    # x2 = ceil(66.19) → clipped to 64, y2 = ceil(99.88) = 100.
    assert sel.crop_boxes[0].tolist() == [0, 89, 64, 100]


def test_trained_detector_single_vehicle_label():
    dets = [[(10, 10, 90, 90, 0.8, 1), (0, 0, 10, 10, 0.99, 2)]]
    sel = _select(dets, [[100, 100]], vehicle_labels=(1,), margin=0.0)
    assert sel.detection[0].tolist() == [10, 10, 90, 90]


def test_ties_go_to_the_first_detection():
    dets = [[(10, 10, 90, 90, 0.8, 3), (10, 10, 90, 90, 0.8, 8), (0, 0, 5, 5, 0.9, 3)]]
    sel = _select(dets, [[100, 100]], margin=0.0)
    assert sel.detection[0].tolist() == [10, 10, 90, 90]
    assert sel.found.item()


def test_no_detections_at_all():
    sel = _select([[], [], []], [[10, 20], [30, 40], [50, 60]])
    assert sel.found.tolist() == [False] * 3
    assert sel.crop_boxes[2].tolist() == [0, 0, 60, 50]


def test_degenerate_box_still_gives_a_pixel():
    crop = expand_boxes(torch.tensor([[99.5, 10.0, 99.5, 10.0]]), torch.tensor([[50, 100]]), 0.05)
    x1, y1, x2, y2 = crop[0].tolist()
    assert x2 - x1 >= 1
    assert y2 - y1 >= 1
    assert min(x1, y1) >= 0
    assert x2 <= 100
    assert y2 <= 50


def _reference_select(dets, size, min_score, margin):
    """Straightforward per-image loop written from the module docstring."""
    h, w = size
    best, best_s = None, -1.0
    for x1, y1, x2, y2, c, label in dets:
        if label not in COCO_VEHICLES or c < min_score:
            continue
        cx1, cx2 = min(max(x1, 0), w), min(max(x2, 0), w)
        cy1, cy2 = min(max(y1, 0), h), min(max(y2, 0), h)
        a = max(cx2 - cx1, 0) * max(cy2 - cy1, 0) / (w * h)
        d = min(
            math.hypot((cx1 + cx2) / 2 - w / 2, (cy1 + cy2) / 2 - h / 2) / (math.hypot(w, h) / 2), 1
        )
        s = c * math.sqrt(a) * (1 - d)
        if s > best_s + 1e-6:
            best, best_s = (x1, y1, x2, y2), s
    if best is None:
        return None
    x1, y1, x2, y2 = best
    bw, bh = x2 - x1, y2 - y1
    return [
        min(max(math.floor(x1 - margin * bw), 0), w - 1),
        min(max(math.floor(y1 - margin * bh), 0), h - 1),
        min(math.ceil(x2 + margin * bw), w),
        min(math.ceil(y2 + margin * bh), h),
    ]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_vectorised_batch_equals_per_image_loop(seed):
    rng = np.random.default_rng(seed)
    sizes, dets = [], []
    for _ in range(rng.integers(1, 6)):
        h, w = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        sizes.append([h, w])
        img = []
        for _ in range(rng.integers(0, 7)):
            x1, x2 = sorted(rng.uniform(0, w, 2).round(1))
            y1, y2 = sorted(rng.uniform(0, h, 2).round(1))
            img.append(
                (
                    x1,
                    y1,
                    x2 + 1,
                    y2 + 1,
                    round(float(rng.uniform()), 3),
                    int(rng.choice([1, 3, 6, 8, 10])),
                )
            )
        dets.append(img)
    sel = _select(dets, sizes, min_score=0.3, margin=0.05)
    for i, (img, size) in enumerate(zip(dets, sizes, strict=True)):
        # The reference sees the float32 boxes and scores a detector hands over, as the code does.
        img32 = [(*(float(np.float32(v)) for v in d[:5]), d[5]) for d in img]
        ref = _reference_select(img32, size, 0.3, 0.05)
        assert bool(sel.found[i]) == (ref is not None)
        if ref is not None:
            assert sel.crop_boxes[i].tolist() == ref
        else:
            assert sel.crop_boxes[i].tolist() == [0, 0, size[1], size[0]]


def test_box_iou():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0])
