"""Road scenes behind the vehicles: one background per camera, plus per-frame foreground objects.

The background (ground, road with markings, sidewalks, buildings, trees, poles, stains, texture) is
rendered once per camera at sensor resolution and cached; images crop it. Objects on the camera's
side of the road (poles, sign posts, tree trunks) are *foreground*: they are drawn in every frame,
before or after the vehicle by depth, so they occlude vehicles that pass behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vreid.synth.camera import SENSOR, CameraSpec

NEAR = 0.5


def clip_near(pc: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Clip a polygon in camera coordinates (n, 3) to z >= near (Sutherland-Hodgman)."""
    inside = pc[:, 2] >= near
    if inside.all():
        return pc
    if not inside.any():
        return pc[:0]
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        ia, ib = a[2] >= near, b[2] >= near
        if ia:
            out.append(a)
        if ia != ib:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else pc[:0]


def _fill(draw: ImageDraw.ImageDraw, cam: CameraSpec, world: np.ndarray, rgb) -> None:
    pc = clip_near(cam.to_camera(world))
    if len(pc) >= 3:
        uv = cam.project_camera(pc)
        draw.polygon(uv.ravel().tolist(), fill=tuple(int(c) for c in rgb))


def _box_faces(center: np.ndarray, size: tuple[float, float, float], yaw: float) -> list:
    """The 5 faces (no bottom) of an upright box standing at ``center``: [((4, 3) points, normal)]."""
    hx, hy, hz = (s / 2 for s in size)
    c, s = np.cos(yaw), np.sin(yaw)
    ax, ay, az = np.array([c, s, 0.0]), np.array([-s, c, 0.0]), np.array([0.0, 0.0, 1.0])
    mid = center + az * hz
    faces = []
    for n, d, u, du, v, dv in (
        (ax, hx, ay, hy, az, hz),
        (-ax, hx, ay, hy, az, hz),
        (ay, hy, ax, hx, az, hz),
        (-ay, hy, ax, hx, az, hz),
        (az, hz, ax, hx, ay, hy),
    ):
        fc = mid + n * d
        pts = np.stack(
            [fc - u * du - v * dv, fc + u * du - v * dv, fc + u * du + v * dv, fc - u * du + v * dv]
        )
        faces.append((pts, n))
    return faces


def _shade(rgb: np.ndarray, normal: np.ndarray, cam: CameraSpec) -> np.ndarray:
    lam = max(0.0, float(np.dot(normal, cam.light_direction)))
    return np.clip(rgb * (cam.ambient + cam.diffuse * lam), 0, 255)


def _draw_box(draw, cam: CameraSpec, center, size, yaw, rgb) -> None:
    rgb = np.asarray(rgb, dtype=np.float64)
    for pts, n in _box_faces(np.asarray(center, dtype=np.float64), size, yaw):
        if np.dot(n, cam.position - pts.mean(0)) > 0:
            _fill(draw, cam, pts, _shade(rgb, n, cam))


def _disc(cam: CameraSpec, center: np.ndarray, radius: float) -> tuple[np.ndarray, float] | None:
    pc = cam.to_camera(center[None])[0]
    if pc[2] < NEAR:
        return None
    uv = cam.project_camera(pc[None])[0]
    return uv, cam.focal * radius / pc[2]


def _col(rgb: np.ndarray, fill: int | None):
    if fill is not None:
        return fill
    return tuple(int(c) for c in np.clip(rgb, 0, 255))


@dataclass(frozen=True)
class Prop:
    """A foreground object standing on the ground: kind, position (world) and size."""

    kind: str  # "pole", "sign", "tree"
    position: tuple[float, float, float]
    height: float
    width: float
    rgb: tuple[float, float, float]
    top_rgb: tuple[float, float, float]


def draw_prop(
    draw: ImageDraw.ImageDraw, cam: CameraSpec, prop: Prop, to_out, fill: int | None = None
) -> None:
    """Draw a prop with a sensor→output transform ``to_out(uv (n, 2)) -> (n, 2)``.

    ``fill`` replaces every colour (for drawing into a mask).
    """
    p = np.array(prop.position)
    w = prop.width
    rgb = np.array(prop.rgb) * 255
    fwd = cam.position - p
    fwd[2] = 0
    fwd /= np.linalg.norm(fwd) + 1e-9
    side = np.array([-fwd[1], fwd[0], 0.0])
    up = np.array([0, 0, 1.0])
    lam = cam.ambient + cam.diffuse * max(0.0, float(np.dot(fwd, cam.light_direction)))
    trunk_h = prop.height if prop.kind != "tree" else prop.height * 0.55
    quad = np.stack(
        [
            p - side * w / 2,
            p + side * w / 2,
            p + side * w / 2 + up * trunk_h,
            p - side * w / 2 + up * trunk_h,
        ]
    )
    pc = clip_near(cam.to_camera(quad))
    if len(pc) >= 3:
        uv = to_out(cam.project_camera(pc))
        draw.polygon(uv.ravel().tolist(), fill=_col(rgb * lam, fill))
    top_rgb = np.array(prop.top_rgb) * 255
    if prop.kind == "sign":
        c = p + up * prop.height
        sq = np.stack(
            [
                c - side * 0.45,
                c + side * 0.45,
                c + side * 0.45 + up * 0.7,
                c - side * 0.45 + up * 0.7,
            ]
        )
        pc = clip_near(cam.to_camera(sq))
        if len(pc) >= 3:
            uv = to_out(cam.project_camera(pc))
            draw.polygon(uv.ravel().tolist(), fill=_col(top_rgb * lam, fill))
    elif prop.kind == "tree":
        d = _disc(cam, p + up * prop.height * 0.8, prop.height * 0.3)
        if d is not None:
            uv, r = d
            uv = to_out(uv[None])[0]
            r = float(to_out(np.array([[r, 0.0]]))[0, 0] - to_out(np.array([[0.0, 0.0]]))[0, 0])
            draw.ellipse(
                [uv[0] - r, uv[1] - r * 0.9, uv[0] + r, uv[1] + r * 0.9],
                fill=_col(top_rgb * lam, fill),
            )
    elif prop.kind == "pole":
        c = p + up * prop.height
        arm = np.stack([c, c + side * 1.6, c + side * 1.6 - up * 0.15, c - up * 0.15])
        pc = clip_near(cam.to_camera(arm))
        if len(pc) >= 3:
            uv = to_out(cam.project_camera(pc))
            draw.polygon(uv.ravel().tolist(), fill=_col(rgb * lam, fill))


def foreground_props(cam: CameraSpec) -> list[Prop]:
    """Props on the camera's side of the road, placed near the sight lines to the visible road."""
    rng = np.random.default_rng([cam.scene_seed, 1])
    side = cam.camera_side
    props = []
    vis = cam.visible_range(0.0, margin=0.05)
    if vis is None:
        return props
    n = int(rng.choice([1, 2, 2, 3]))
    for _ in range(n):
        s = rng.uniform(*vis)
        lateral = side * (cam.road_half_width + rng.uniform(1.0, 3.0))
        # move the prop towards the camera along the sight line so it can hide part of a vehicle
        road = cam.road_point(s, 0.0)
        foot = np.array([cam.position[0], cam.position[1], 0.0])
        p = cam.road_point(s, lateral)
        t = rng.uniform(0.0, 0.35)
        p = p + t * (foot - road)
        if np.linalg.norm(p - foot) < 4.0:
            continue
        kind = str(rng.choice(["pole", "sign", "tree"], p=[0.45, 0.3, 0.25]))
        if kind == "pole":
            props.append(
                Prop(
                    kind,
                    tuple(p),
                    float(rng.uniform(5, 8)),
                    0.22,
                    (0.45, 0.46, 0.48),
                    (0.4, 0.4, 0.4),
                )
            )
        elif kind == "sign":
            top = [(0.15, 0.35, 0.7), (0.8, 0.1, 0.1), (0.1, 0.45, 0.2), (0.9, 0.75, 0.1)][
                int(rng.integers(4))
            ]
            props.append(
                Prop(kind, tuple(p), float(rng.uniform(2.0, 2.8)), 0.1, (0.55, 0.55, 0.57), top)
            )
        else:
            props.append(
                Prop(
                    kind,
                    tuple(p),
                    float(rng.uniform(4, 8)),
                    0.35,
                    (0.3, 0.22, 0.15),
                    (0.18, 0.35, 0.12),
                )
            )
    return props


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: random values on a coarse grid, resized bicubically. (h, w)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.uniform(0, 255, size=(gh, gw)).astype(np.uint8)
    img = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def render_background(cam: CameraSpec) -> Image.Image:
    """The camera's road scene at sensor resolution (RGB, ``SENSOR`` size)."""
    rng = np.random.default_rng([cam.scene_seed, 0])
    w, h = SENSOR
    # sky gradient (visible only when the horizon is in the frame)
    sky_top = np.array(rng.uniform([90, 130, 190], [150, 180, 230]))
    sky_low = np.array(rng.uniform([170, 180, 190], [225, 225, 230]))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    sky = (sky_top[None] * (1 - t) + sky_low[None] * t).astype(np.uint8)
    img = Image.fromarray(np.repeat(sky[:, None, :], w, axis=1))
    draw = ImageDraw.Draw(img)

    d, nrm = cam.road_direction, cam.road_normal
    T = cam.target
    hw = cam.road_half_width
    ground_kind = int(rng.integers(3))
    ground_rgb = [(84, 110, 60), (120, 108, 88), (128, 126, 120)][ground_kind] + rng.uniform(
        -12, 12, 3
    )
    big = 400.0

    def rect(s0, s1, l0, l1):
        return np.stack(
            [
                T + s0 * d + l0 * nrm,
                T + s1 * d + l0 * nrm,
                T + s1 * d + l1 * nrm,
                T + s0 * d + l1 * nrm,
            ]
        )

    # far buildings first (painter's order: ground, then things on it from far to near)
    _fill(draw, cam, rect(-big, big, -big, big), ground_rgb)
    asphalt = rng.uniform(62, 100)
    asphalt_rgb = np.array([asphalt, asphalt, asphalt * rng.uniform(0.98, 1.06)])
    walk = rng.uniform(3.0, 5.0)
    walk_rgb = np.full(3, rng.uniform(135, 175))
    for sgn in (-1, 1):
        _fill(draw, cam, rect(-big, big, sgn * hw, sgn * (hw + walk)), walk_rgb)
        _fill(draw, cam, rect(-big, big, sgn * hw, sgn * (hw + 0.25)), walk_rgb * 0.8)
    _fill(draw, cam, rect(-big, big, -hw, hw), asphalt_rgb)
    # stains and patches on the asphalt
    for _ in range(int(rng.integers(6, 18))):
        s = rng.uniform(-60, 60)
        lat = rng.uniform(-hw, hw)
        a, b = rng.uniform(0.5, 3), rng.uniform(0.3, 1.5)
        k = rng.uniform(0.75, 1.2)
        _fill(draw, cam, rect(s - a, s + a, lat - b, min(hw, lat + b)), asphalt_rgb * k)
    # shadows of trees and buildings across the road
    for _ in range(int(rng.integers(0, 5))):
        s = rng.uniform(-50, 50)
        a = rng.uniform(1.5, 8)
        side = rng.choice([-1, 1])
        reach = rng.uniform(0.3, 1.0) * 2 * hw
        _fill(draw, cam, rect(s - a, s + a, side * hw, side * (hw - reach)), asphalt_rgb * 0.55)
    # lane markings: dashed lines between lanes, solid edges and centre line
    paint = np.array([225, 225, 215]) * rng.uniform(0.75, 1.0)
    yellow_centre = rng.random() < 0.5
    for i in range(1, cam.lanes):
        lat = -hw + i * (2 * hw / cam.lanes)
        if i == cam.lanes // 2:
            col = np.array([220, 180, 40]) if yellow_centre else paint
            for off in (-0.12, 0.12) if yellow_centre else (0.0,):
                _fill(draw, cam, rect(-big, big, lat + off - 0.07, lat + off + 0.07), col)
        else:
            start = rng.uniform(0, 9)
            for s in np.arange(-150 + start, 150, 9.0):
                _fill(draw, cam, rect(s, s + 3.0, lat - 0.07, lat + 0.07), paint)
    for sgn in (-1, 1):
        _fill(draw, cam, rect(-big, big, sgn * (hw - 0.35), sgn * (hw - 0.2)), paint)
    if rng.random() < 0.4:  # zebra crossing
        s0 = rng.uniform(-25, 25)
        for lat in np.arange(-hw + 0.3, hw - 0.3, 1.0):
            _fill(draw, cam, rect(s0, s0 + 3.5, lat, lat + 0.5), paint)

    # objects beside the road: far side always; near side too when the camera is above the road
    cam_lat = float(np.dot(cam.position - T, nrm))
    sides = [-cam.camera_side] if abs(cam_lat) > hw + walk else [-1.0, 1.0]
    objects = []
    for sgn in sides:
        s = -90.0
        while s < 90:
            width = rng.uniform(8, 25)
            depth = rng.uniform(8, 20)
            height = rng.uniform(5, 30)
            lat = sgn * (hw + walk + rng.uniform(1, 6) + depth / 2)
            c = T + (s + width / 2) * d + lat * nrm
            tone = [
                (150, 140, 125),
                (120, 80, 60),
                (170, 165, 150),
                (110, 112, 118),
                (190, 175, 140),
                (90, 95, 100),
            ]
            base = np.array(tone[int(rng.integers(len(tone)))]) * rng.uniform(
                0.8, 1.15
            ) + rng.uniform(-12, 12, 3)
            objects.append(("building", c, (width, depth, height), base))
            s += width + rng.uniform(0, 6)
        for s in np.arange(-80, 80, rng.uniform(8, 20)):
            lat = sgn * (hw + rng.uniform(0.6, walk - 0.3))
            c = T + s * d + lat * nrm
            kind = "tree" if rng.random() < 0.5 else "pole"
            objects.append((kind, c, (0.3, 0.3, rng.uniform(4, 9)), None))
    dist = [float(np.linalg.norm(o[1] - cam.position)) for o in objects]
    keep = [i for i, o in enumerate(objects) if o[0] == "building" or dist[i] > 0.8 * cam.distance]
    objects = [objects[i] for i in keep]
    dist = [dist[i] for i in keep]
    yaw = float(np.arctan2(d[1], d[0]))
    for i in np.argsort(dist)[::-1]:
        kind, c, size, base = objects[i]
        if kind == "building":
            _draw_box(draw, cam, c, size, yaw, base)
            # window grid on the face that looks at the road
            n = -np.sign(np.dot(c - T, nrm)) * nrm
            if np.dot(n, cam.position - c) > 0:
                wdt, dep, hgt = size
                face_c = c + n * dep / 2
                win = base * 0.45
                for z in np.arange(2.5, hgt - 1.5, 3.2):
                    for x in np.arange(-wdt / 2 + 1.5, wdt / 2 - 1.5, 2.8):
                        up = np.array([0, 0, 1.0])
                        p0 = face_c + x * d + z * up
                        quad = np.stack([p0, p0 + 1.4 * d, p0 + 1.4 * d + up * 1.6, p0 + up * 1.6])
                        _fill(draw, cam, quad, _shade(win, n, cam))
        else:
            h_obj = size[2]
            p = Prop(
                kind,
                tuple(c),
                float(h_obj),
                0.25 if kind == "pole" else 0.35,
                (0.45, 0.46, 0.48) if kind == "pole" else (0.3, 0.22, 0.15),
                (0.4, 0.4, 0.4)
                if kind == "pole"
                else tuple(rng.uniform([0.1, 0.25, 0.08], [0.25, 0.45, 0.2])),
            )
            draw_prop(draw, cam, p, lambda uv: uv)

    # texture: smooth shading variation plus fine grain, one (h, w) modulation for all channels
    arr = np.asarray(img, dtype=np.float32)
    mod = 1 + 0.10 * _noise_field(rng, h, w, 160) + 0.06 * _noise_field(rng, h, w, 24)
    grain = rng.integers(0, 256, size=(h // 2, w // 2), dtype=np.uint8)
    grain = Image.fromarray(grain).resize((w, h), Image.BILINEAR)
    add = (np.asarray(grain, dtype=np.float32) - 127.5) * 0.05
    arr *= mod[..., None]
    arr += add[..., None]
    return Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8))
