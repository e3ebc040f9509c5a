from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vreid.core.errors import DatasetError
from vreid.data import ImageRecord
from vreid.data.attributes import (
    AIC_COLOR_TO_CLASS,
    AIC_COLORS,
    AIC_TYPE_TO_CLASS,
    AIC_TYPES,
    COLOR_CLASSES,
    IGNORE_INDEX,
    TYPE_CLASSES,
    VERI_COLORS,
    VERI_TYPES,
    attribute_targets,
    veri_to_aic,
)
from vreid.engine.attributes import _head_loss, balanced_class_weights


def _rec(name: str, color: int | None, type_: int | None) -> ImageRecord:
    return ImageRecord(Path("/data/image_train") / name, name, "train", 1, 1, None, color, type_)


def test_type_clusters_are_the_papers_six_classes():
    assert TYPE_CLASSES == ("small", "big", "van", "pickup", "truck", "long")
    expected = {
        "sedan": "small", "hatchback": "small", "estate": "small", "sportscar": "small",
        "suv": "big", "mpv": "big", "van": "van", "pickup": "pickup", "truck": "truck",
        "bus": "long", "RV": "long",
    }  # fmt: skip
    got = {AIC_TYPES[i]: TYPE_CLASSES[c] for i, c in enumerate(AIC_TYPE_TO_CLASS)}
    assert got == expected
    # every class has at least one member and every AIC type exactly one class
    assert sorted(set(AIC_TYPE_TO_CLASS.tolist())) == list(range(6))


def test_colour_classes_drop_orange_pink_purple_only():
    assert len(COLOR_CLASSES) == 9
    assert set(AIC_COLORS) - set(COLOR_CLASSES) == {"orange", "pink", "purple"}
    for aic_id, name in enumerate(AIC_COLORS):
        cls = int(AIC_COLOR_TO_CLASS[aic_id])
        if name in ("orange", "pink", "purple"):
            assert cls == IGNORE_INDEX
        else:
            assert COLOR_CLASSES[cls] == name


def test_veri_ids_map_onto_the_aic_names():
    for k in range(1, len(VERI_COLORS) + 1):
        assert AIC_COLORS[veri_to_aic("color", k)] == VERI_COLORS[k - 1]
    for k in range(1, len(VERI_TYPES) + 1):
        assert AIC_TYPES[veri_to_aic("type", k)] == VERI_TYPES[k - 1]
    assert veri_to_aic("type", 0) is None  # VeRi's "invalid" type id
    with pytest.raises(ValueError, match=r"outside 1\.\.10"):
        veri_to_aic("color", 11)


def test_targets_ignore_excluded_colours_and_unknown_labels():
    recs = [
        _rec("a.jpg", AIC_COLORS.index("red"), AIC_TYPES.index("bus")),
        _rec("b.jpg", AIC_COLORS.index("orange"), AIC_TYPES.index("sedan")),
        _rec("c.jpg", AIC_COLORS.index("pink"), AIC_TYPES.index("RV")),
        _rec("d.jpg", None, None),
        _rec("e.jpg", AIC_COLORS.index("black"), AIC_TYPES.index("mpv")),
    ]
    t = attribute_targets(recs)
    red, black = COLOR_CLASSES.index("red"), COLOR_CLASSES.index("black")
    assert t["color"].tolist() == [red, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, black]
    assert t["type"].tolist() == [5, 0, 5, IGNORE_INDEX, 1]
    # the excluded images still train the type head, and add nothing to the colour loss
    logits = torch.randn(5, len(COLOR_CLASSES))
    loss = F.cross_entropy(logits, torch.from_numpy(t["color"]), ignore_index=IGNORE_INDEX)
    kept = torch.tensor([0, 4])
    ref = F.cross_entropy(logits[kept], torch.tensor([red, black]))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("color", "type_", "what"),
    [(12, 0, "color id 12"), (0, 11, "type id 11"), (-3, 0, "color id -3")],
)
def test_labels_outside_the_tables_name_the_image(color, type_, what):
    recs = [_rec("ok.jpg", 0, 0), _rec("000042.jpg", color, type_)]
    with pytest.raises(DatasetError) as e:
        attribute_targets(recs, source="/data/train_label.xml")
    msg = str(e.value)
    assert "000042.jpg" in msg
    assert "/data/train_label.xml" in msg
    assert what in msg


def test_empty_records_give_empty_targets():
    t = attribute_targets([])
    assert t["color"].shape == (0,)
    assert t["type"].dtype == np.int64


def test_balanced_class_weights_equalise_classes_and_keep_the_mean_weight():
    target = np.array([0, 0, 0, 1, IGNORE_INDEX, 0, 1, 3])  # class 2 absent
    w = balanced_class_weights(target, 4)
    known = target[target != IGNORE_INDEX]
    # each present class carries the same total weight; the images' mean weight is 1
    totals = [w[c] * np.sum(known == c) for c in (0, 1, 3)]
    np.testing.assert_allclose(totals, [7 / 3] * 3, rtol=1e-6)
    assert w[2] == 0
    np.testing.assert_allclose(w[known].mean(), 1.0, rtol=1e-6)
    # the weighted loss the attribute step computes: a majority-only predictor now pays for the
    # rare classes as much as it gains on the majority one
    logits = torch.zeros(len(known), 4)
    logits[:, 0] = 5.0  # always "class 0"
    plain = _head_loss(logits, torch.from_numpy(known))
    balanced = _head_loss(logits, torch.from_numpy(known), torch.from_numpy(w))
    assert float(balanced) > 1.4 * float(plain)
