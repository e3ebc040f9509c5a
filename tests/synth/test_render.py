"""The renderer: colour and type labels match the pixels, boxes match the vehicle, purity."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vreid.data.attributes import AIC_COLORS
from vreid.synth import plan_dataset
from vreid.synth.camera import CameraSpec, sample_camera
from vreid.synth.render import FrameSpec, Renderer
from vreid.synth.vehicles import COLOR_RGB, sample_vehicle

CHROMATIC = {"yellow", "orange", "green", "red", "blue", "golden", "brown", "purple", "pink"}


def _body_hsv(image: Image.Image, mask: np.ndarray) -> tuple[float, float, float]:
    """Circular-mean hue (degrees), mean saturation and value (0..1) of the masked pixels."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64)[mask] / 255.0
    ang = hsv[:, 0] * 2 * np.pi
    hue = np.rad2deg(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360
    return float(hue), float(hsv[:, 1].mean()), float(hsv[:, 2].mean())


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def _check_colour(color: str, hue: float, sat: float, val: float) -> None:
    if color in CHROMATIC:
        nominal = colorsys.rgb_to_hsv(*COLOR_RGB[color])[0] * 360
        assert _hue_distance(hue, nominal) < 30, (color, hue, nominal)
        assert sat > 0.2, (color, sat)
    elif color == "black":  # hue and saturation of dark pixels are noise
        assert val < 0.25, (color, val)
    else:
        assert sat < 0.3, (color, sat)
        if color == "white":
            assert val > 0.5, (color, val)
        if color == "gray":
            assert 0.2 < val < 0.8, (color, val)


def _frame(cam, vehicle: int, camera: int, lane: int = 0, **kw) -> FrameSpec:
    lateral, direction = cam.lane_offsets()[lane]
    lo, hi = cam.visible_range(lateral)
    heading = cam.road_angle + (0.0 if direction > 0 else np.pi)
    args = dict(margin=0.1, offset=(0.0, 0.0), truncate=(0.0, 0.0), brightness=1.0, seed=7)
    args.update(kw)
    return FrameSpec(vehicle, camera, (lo + hi) / 2, lateral, heading, **args)


@pytest.mark.parametrize("color", ["red", "blue", "green", "yellow", "white", "black"])
def test_rendered_body_colour_matches_label(color: str) -> None:
    rng = np.random.default_rng(3)
    vehicles = [sample_vehicle(rng, i, type_name="sedan", color_name=color) for i in range(3)]
    cams = [sample_camera(np.random.default_rng(10 + c), c + 1) for c in range(3)]
    renderer = Renderer(vehicles, cams, (128, 128))
    for v in range(3):
        for c in range(3):
            out = renderer.render(_frame(cams[c], v, c), mask=True)
            assert out.mask is not None
            assert out.mask.sum() > 200
            assert vehicles[v].color_id == AIC_COLORS.index(color)
            _check_colour(color, *_body_hsv(out.image, out.mask))


def test_dataset_colour_labels_match_pixels_on_disk(tiny_synth: Path) -> None:
    """Re-render the tiny set's simulation images with a mask; the JPEG's body hue fits colorID."""
    from vreid.data import load_dataset

    plan = plan_dataset(tiny_synth, preset="tiny", seed=0)
    renderer = Renderer(plan.vehicles, plan.cameras, (256, 256))
    sim = load_dataset(tiny_synth / "simulation")
    labels = {r.name: r for r in sim["train"]}
    extras = sim.extra_attributes["train"]
    checked = 0
    for task in plan.tasks:
        path = Path(task.path)
        if path.parent.parent.name != "simulation":
            continue
        rec = labels[path.name]
        spec = plan.vehicles[task.frame.vehicle]
        assert (rec.color, rec.type, rec.vehicle_id) == (
            spec.color_id,
            spec.type_id,
            spec.vehicle_id,
        )
        out = renderer.render(task.frame, mask=True)
        labelled = float(extras[path.name]["orientation"])
        assert _hue_distance(labelled, out.orientation) < 0.1  # label = rendered pose
        if out.mask.sum() < 300:  # mostly hidden (truncated or occluded)
            continue
        on_disk = Image.open(path)
        _check_colour(AIC_COLORS[rec.color], *_body_hsv(on_disk, out.mask))
        checked += 1
    assert checked >= 10


def _with(cam: CameraSpec, **changes: float) -> CameraSpec:
    """A copy of a camera with some fields changed (fresh cached geometry)."""
    return CameraSpec(**{**{k: getattr(cam, k) for k in cam.__dataclass_fields__}, **changes})


def _side_aspect(type_name: str) -> float:
    """Height / width of a type's body mask seen from the side by a fixed camera."""
    side = {"road_angle": 0.0, "height": 4.0, "distance": 30.0, "resolution": 1.0, "blur": 0.0}
    cam = _with(sample_camera(np.random.default_rng(5), 1), **side)
    v = sample_vehicle(np.random.default_rng(0), 1, type_name=type_name, color_name="red")
    out = Renderer([v], [cam], (256, 256)).render(_frame(cam, 0, 0), mask=True)
    ys, xs = np.nonzero(out.mask)
    return float((ys.max() - ys.min()) / (xs.max() - xs.min()))


def test_rendered_type_shapes_differ() -> None:
    """Side views: buses are long and flat, vans tall, sports cars low, as the labels say."""
    aspect = {t: _side_aspect(t) for t in ("bus", "van", "suv", "sedan", "sportscar")}
    assert aspect["bus"] < aspect["sedan"]
    assert aspect["sportscar"] < aspect["sedan"] < aspect["suv"] < aspect["van"]


def test_box_contains_the_vehicle_and_truncation_cuts_it() -> None:
    rng = np.random.default_rng(1)
    vehicles = [sample_vehicle(rng, 1, type_name="suv", color_name="blue")]
    cams = [sample_camera(np.random.default_rng(2), 1)]
    r = Renderer(vehicles, cams, (128, 128))
    out = r.render(_frame(cams[0], 0, 0), mask=True)
    ys, xs = np.nonzero(out.mask)
    x1, y1, x2, y2 = out.box
    assert x1 - 1 <= xs.min()
    assert xs.max() <= x2 + 1
    assert y1 - 1 <= ys.min()
    assert ys.max() <= y2 + 1
    assert x1 > 0
    assert x2 < 128
    cut = r.render(_frame(cams[0], 0, 0, truncate=(0.3, 0.0)), mask=True)
    assert cut.box[2] == pytest.approx(128.0)  # the vehicle runs off the right edge


def test_rendering_is_pure() -> None:
    rng = np.random.default_rng(4)
    vehicles = [sample_vehicle(rng, i) for i in range(3)]
    cams = [sample_camera(np.random.default_rng(20 + c), c + 1) for c in range(2)]
    frames = [_frame(cams[c], v, c, seed=v * 10 + c) for v in range(3) for c in range(2)]
    a = [np.asarray(Renderer(vehicles, cams).render(f).image) for f in frames]
    r = Renderer(vehicles, cams, background_cache=1)  # different cache state and order
    b = [np.asarray(r.render(f).image) for f in reversed(frames)][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_other_traffic_hides_part_of_the_vehicle() -> None:
    rng = np.random.default_rng(6)
    vehicles = [sample_vehicle(rng, 1, type_name="sedan", color_name="red")]
    vehicles.append(sample_vehicle(rng, 2, type_name="van", color_name="white"))
    cam = _with(sample_camera(np.random.default_rng(8), 1), road_angle=0.0, height=5.0)
    r = Renderer(vehicles, [cam], (128, 128))
    lanes = cam.lane_offsets()
    far = max(range(len(lanes)), key=lambda i: -cam.camera_side * lanes[i][0])
    clear = _frame(cam, 0, 0, lane=far)
    near_lat = clear.lateral + cam.camera_side * 3.5
    hidden = FrameSpec(**{**clear.__dict__, "occluder": (1, clear.s, near_lat, clear.heading)})
    a, b = r.render(clear, mask=True), r.render(hidden, mask=True)
    assert b.mask.sum() < 0.8 * a.mask.sum()  # the van in front hides the sedan's paint
    assert a.box == b.box  # the true box is the whole (amodal) vehicle
