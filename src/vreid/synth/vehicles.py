"""Parametric 3-D vehicles: one body plan per AIC type, per-identity proportions, colour and marks.

A vehicle is a small set of convex *parts* (lower body, cabin, cargo box, mirrors, spoiler, roof
rack), each a prism extruded across the width from a convex side profile, so back-face culling
alone renders a part correctly and parts are ordered by a layer and their depth. Flat *decals*
(windows, wheels, lights, plates, grille, stripes, stickers) ride on one face of a part and are
drawn right after it when that face is visible.

Vehicle frame: x forward (length), y to the vehicle's left, z up, origin on the ground under the
centre of the body; metres.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vreid.data.attributes import AIC_COLORS, AIC_TYPES

# Base RGB (0..1) of each AIC colour id; identities perturb them a little (see ``sample_vehicle``).
COLOR_RGB: dict[str, tuple[float, float, float]] = {
    "yellow": (0.92, 0.76, 0.10),
    "orange": (0.93, 0.42, 0.08),
    "green": (0.13, 0.42, 0.20),
    "gray": (0.52, 0.53, 0.55),
    "red": (0.72, 0.07, 0.07),
    "blue": (0.10, 0.22, 0.58),
    "white": (0.90, 0.90, 0.89),
    "golden": (0.76, 0.63, 0.36),
    "brown": (0.38, 0.24, 0.13),
    "black": (0.07, 0.07, 0.08),
    "purple": (0.38, 0.14, 0.48),
    "pink": (0.90, 0.50, 0.64),
}
# Relative frequency of each colour in traffic (many identities share white/black/gray).
COLOR_WEIGHTS: dict[str, float] = {
    "white": 0.22, "black": 0.18, "gray": 0.18, "red": 0.09, "blue": 0.10, "golden": 0.04,
    "brown": 0.04, "green": 0.05, "yellow": 0.03, "orange": 0.02, "purple": 0.025, "pink": 0.025,
}  # fmt: skip
TYPE_WEIGHTS: dict[str, float] = {
    "sedan": 0.24, "suv": 0.19, "hatchback": 0.10, "mpv": 0.08, "pickup": 0.08, "van": 0.07,
    "estate": 0.05, "sportscar": 0.04, "truck": 0.06, "bus": 0.04, "RV": 0.05,
}  # fmt: skip

# Body plan per type: length, width, ground clearance, belt (top of the lower body) and roof
# heights, and the cabin's x positions as offsets: hood length, windshield run, roof length, rear
# window run (the rest is the trunk). "box" types (truck) add a cargo box instead of a long cabin.
_PLANS: dict[str, dict[str, float]] = {
    "sedan": dict(L=4.7, W=1.82, zc=0.17, hb=0.88, hr=1.44, hood=1.40, wind=0.78, roof=1.15, rear=0.68, taper=0.16, nose=0.22, tail=0.14, wheel=0.32),
    "hatchback": dict(L=4.05, W=1.76, zc=0.16, hb=0.90, hr=1.47, hood=1.12, wind=0.72, roof=1.55, rear=0.55, taper=0.14, nose=0.22, tail=0.06, wheel=0.31),
    "estate": dict(L=4.8, W=1.82, zc=0.17, hb=0.90, hr=1.48, hood=1.32, wind=0.76, roof=2.35, rear=0.25, taper=0.14, nose=0.22, tail=0.05, wheel=0.32),
    "sportscar": dict(L=4.45, W=1.90, zc=0.11, hb=0.74, hr=1.17, hood=1.70, wind=0.92, roof=0.80, rear=0.80, taper=0.20, nose=0.30, tail=0.10, wheel=0.33),
    "suv": dict(L=4.75, W=1.92, zc=0.24, hb=1.08, hr=1.78, hood=1.18, wind=0.66, roof=2.55, rear=0.22, taper=0.12, nose=0.14, tail=0.05, wheel=0.38),
    "mpv": dict(L=4.85, W=1.86, zc=0.17, hb=0.98, hr=1.76, hood=0.88, wind=1.05, roof=2.65, rear=0.16, taper=0.12, nose=0.20, tail=0.04, wheel=0.33),
    "van": dict(L=5.3, W=2.00, zc=0.20, hb=1.05, hr=2.30, hood=0.70, wind=0.62, roof=3.95, rear=0.02, taper=0.06, nose=0.18, tail=0.02, wheel=0.35),
    "pickup": dict(L=5.4, W=1.96, zc=0.28, hb=1.10, hr=1.86, hood=1.35, wind=0.60, roof=1.20, rear=0.12, taper=0.10, nose=0.12, tail=0.03, wheel=0.40),
    "truck": dict(L=7.6, W=2.40, zc=0.38, hb=1.15, hr=2.95, hood=0.06, wind=0.25, roof=1.60, rear=0.02, taper=0.05, nose=0.05, tail=0.02, wheel=0.50),
    "bus": dict(L=11.6, W=2.52, zc=0.30, hb=1.15, hr=3.10, hood=0.04, wind=0.22, roof=11.2, rear=0.06, taper=0.04, nose=0.03, tail=0.03, wheel=0.50),
    "RV": dict(L=8.0, W=2.40, zc=0.30, hb=1.10, hr=3.20, hood=0.55, wind=0.85, roof=6.55, rear=0.03, taper=0.05, nose=0.15, tail=0.03, wheel=0.45),
}  # fmt: skip

MARKS = ("stripe", "hood_stripe", "two_tone", "roof_rack", "spoiler", "sticker", "sunroof", "skirt")

# Materials: how a polygon is shaded.
BODY, GLASS, DARK, LIGHT, PAINT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class VehicleSpec:
    """Everything that defines one identity's appearance (the same in every camera)."""

    vehicle_id: int
    type_id: int
    color_id: int
    rgb: tuple[float, float, float]
    """Body colour with the identity's own shade (0..1)."""
    dims: dict[str, float]
    """The type's body plan scaled by the identity's proportions (see ``_PLANS``)."""
    metallic: float
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Identity marks: name -> parameters (colours, positions)."""
    rim_rgb: tuple[float, float, float] = (0.7, 0.7, 0.72)
    plate: tuple[float, ...] = ()
    """Plate pattern: background grey level then 4 mark positions in [0, 1]."""
    light_style: int = 0
    """Head/tail light shape variant (0: rectangles, 1: slim bars, 2: square pairs)."""
    grille_rgb: tuple[float, float, float] = (0.08, 0.08, 0.09)
    cargo_rgb: tuple[float, float, float] | None = None

    @property
    def type_name(self) -> str:
        return AIC_TYPES[self.type_id]

    @property
    def color_name(self) -> str:
        return AIC_COLORS[self.color_id]


def _choice(rng: np.random.Generator, table: dict[str, float]) -> str:
    names = list(table)
    p = np.array([table[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _shade(rgb: tuple[float, float, float], rng: np.random.Generator) -> tuple[float, float, float]:
    """The identity's own shade of a colour: small hue, saturation and value changes."""
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.uniform(-0.018, 0.018)) % 1.0
    s = float(np.clip(s * rng.uniform(0.85, 1.12), 0, 1))
    v = float(np.clip(v * rng.uniform(0.86, 1.08), 0, 1))
    return colorsys.hsv_to_rgb(h, s, v)


def _contrast_rgb(rgb: tuple[float, float, float], rng: np.random.Generator) -> tuple[float, ...]:
    """A mark colour that stands out against the body colour."""
    lum = 0.3 * rgb[0] + 0.59 * rgb[1] + 0.11 * rgb[2]
    options = [
        (0.05, 0.05, 0.06),
        (0.93, 0.93, 0.93),
        (0.80, 0.08, 0.06),
        (0.95, 0.70, 0.05),
        (0.10, 0.30, 0.75),
        (0.55, 0.56, 0.58),
    ]
    ok = [c for c in options if abs(0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2] - lum) > 0.2]
    return ok[int(rng.integers(len(ok)))]


def sample_vehicle(
    rng: np.random.Generator,
    vehicle_id: int,
    *,
    type_name: str | None = None,
    color_name: str | None = None,
) -> VehicleSpec:
    """Draw one identity: type and colour from traffic-like frequencies, proportions, marks."""
    tname = type_name or _choice(rng, TYPE_WEIGHTS)
    if color_name is None:
        weights = dict(COLOR_WEIGHTS)
        if tname in ("RV", "truck"):  # mostly white/gray/black
            for c in weights:
                weights[c] *= 4.0 if c in ("white", "gray", "golden") else 1.0
        color_name = _choice(rng, weights)
    plan = dict(_PLANS[tname])
    # Per-identity proportions: overall scale of length/width/height and cabin placement.
    sl, sw, sh = rng.uniform(0.93, 1.07), rng.uniform(0.95, 1.05), rng.uniform(0.94, 1.07)
    for k in ("L", "hood", "roof", "rear"):
        plan[k] *= sl
    plan["wind"] *= rng.uniform(0.85, 1.15)
    # the identity's own body plan: hood, rear window and nose/tail shapes vary independently
    plan["hood"] *= rng.uniform(0.9, 1.1)
    plan["rear"] *= rng.uniform(0.8, 1.2)
    plan["nose"] *= rng.uniform(0.7, 1.3)
    plan["tail"] *= rng.uniform(0.7, 1.3)
    plan["W"] *= sw
    for k in ("hb", "hr"):
        plan[k] *= sh
    plan["hr"] += rng.uniform(-0.04, 0.04) * plan["hr"]
    plan["taper"] *= rng.uniform(0.7, 1.3)
    plan["wheel"] *= rng.uniform(0.94, 1.06)
    rgb = _shade(COLOR_RGB[color_name], rng)
    marks: dict[str, dict[str, Any]] = {}
    n_marks = int(rng.choice([0, 1, 1, 2, 2, 3]))
    allowed = list(MARKS)
    if tname not in ("sedan", "hatchback", "sportscar", "estate"):
        allowed.remove("spoiler")
    if tname in ("bus", "truck"):
        allowed.remove("roof_rack")
        allowed.remove("sunroof")
    for mark in rng.choice(allowed, size=min(n_marks, len(allowed)), replace=False):
        mark = str(mark)
        c = _contrast_rgb(rgb, rng)
        if mark == "stripe":
            marks[mark] = dict(
                rgb=c, z=float(rng.uniform(0.35, 0.8)), h=float(rng.uniform(0.06, 0.16))
            )
        elif mark == "hood_stripe":
            marks[mark] = dict(
                rgb=c, w=float(rng.uniform(0.12, 0.3)), double=bool(rng.random() < 0.5)
            )
        elif mark == "two_tone":
            marks[mark] = dict(rgb=c)
        elif mark == "roof_rack":
            marks[mark] = dict(rgb=(0.1, 0.1, 0.1) if rng.random() < 0.7 else (0.7, 0.7, 0.72))
        elif mark == "spoiler":
            marks[mark] = dict(rgb=c if rng.random() < 0.5 else rgb)
        elif mark == "sticker":
            marks[mark] = dict(
                rgb=c, x=float(rng.uniform(-0.35, 0.35)), z=float(rng.uniform(0.35, 0.75)),
                size=float(rng.uniform(0.25, 0.5)), rear=bool(rng.random() < 0.5),
            )  # fmt: skip
        elif mark == "sunroof":
            marks[mark] = dict(rgb=(0.05, 0.06, 0.08))
        elif mark == "skirt":
            marks[mark] = dict(rgb=(0.12, 0.12, 0.13) if sum(rgb) > 0.6 else (0.6, 0.6, 0.62))
    rims = [(0.72, 0.72, 0.74), (0.12, 0.12, 0.13), (0.78, 0.66, 0.30), (0.92, 0.92, 0.92)]
    rim = rims[int(rng.choice(4, p=[0.55, 0.25, 0.1, 0.1]))]
    plate = (float(rng.choice([0.95, 0.9, 0.85])), *sorted(rng.uniform(0.1, 0.9, size=4).tolist()))
    grilles = [(0.07, 0.07, 0.08), (0.65, 0.66, 0.68), (0.25, 0.25, 0.27)]
    cargo = None
    if tname == "truck":
        cargo = (
            (0.92, 0.92, 0.92)
            if rng.random() < 0.6
            else tuple(float(x) for x in rng.uniform(0.2, 0.8, size=3))
        )
    return VehicleSpec(
        vehicle_id=vehicle_id,
        type_id=AIC_TYPES.index(tname),
        color_id=AIC_COLORS.index(color_name),
        rgb=tuple(float(x) for x in rgb),
        dims={k: float(v) for k, v in plan.items()},
        metallic=float(rng.uniform(0.0, 0.45)),
        marks=marks,
        rim_rgb=rim,
        plate=plate,
        light_style=int(rng.integers(3)),
        grille_rgb=grilles[int(rng.integers(3))],
        cargo_rgb=cargo,
    )


# ------------------------------------------------------------------------------------------
# Mesh


@dataclass
class Mesh:
    """Polygons of a vehicle in draw-ready form (vehicle frame).

    ``polys[i]`` indexes ``vertices``; ``owner[i]`` is the face whose visibility (and normal)
    governs polygon ``i`` (itself for faces, the carrying face for decals); ``part[i]`` and
    ``layer[i]`` order the parts; ``material[i]`` picks the shading; ``body[i]`` marks polygons in
    the body colour (for masks in tests).
    """

    vertices: np.ndarray  # (V, 3)
    polys: list[np.ndarray]
    owner: np.ndarray  # (P,)
    part: np.ndarray  # (P,)
    layer: np.ndarray  # (P,)
    material: np.ndarray  # (P,)
    rgb: np.ndarray  # (P, 3)
    body: np.ndarray  # (P,) bool
    normals: np.ndarray  # (P, 3) normal of each polygon's owner face
    centroids: np.ndarray  # (P, 3) centroid of each polygon's owner face
    part_centroids: np.ndarray  # (n_parts, 3)
    footprint: np.ndarray  # (4, 2) ground rectangle (x, y)
    top_height: float
    bounds: np.ndarray = field(init=False)  # (8, 3) bounding-box corners
    spans: list[tuple[int, int]] = field(init=False)
    """(first, end) vertex index of each polygon (polygons are stored contiguously)."""

    def __post_init__(self) -> None:
        self.spans = [(int(p[0]), int(p[-1]) + 1) for p in self.polys]
        assert all(b - a == len(p) for (a, b), p in zip(self.spans, self.polys, strict=True))
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        self.bounds = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )


class _Builder:
    """Accumulates parts, faces and decals into a :class:`Mesh`."""

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.n_vertices = 0
        self.polys: list[np.ndarray] = []
        self.owner: list[int] = []
        self.part: list[int] = []
        self.layer: list[int] = []
        self.material: list[int] = []
        self.rgb: list[tuple[float, ...]] = []
        self.body: list[bool] = []
        self.face_normals: dict[int, np.ndarray] = {}
        self.face_centroids: dict[int, np.ndarray] = {}
        self.part_centroids: list[np.ndarray] = []

    def _add_vertices(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        idx = np.arange(self.n_vertices, self.n_vertices + len(pts))
        self.vertices.append(pts)
        self.n_vertices += len(pts)
        return idx

    def new_part(self, points: np.ndarray, layer: int) -> int:
        self.part_centroids.append(np.asarray(points, dtype=np.float64).mean(0))
        return len(self.part_centroids) - 1

    def face(
        self,
        pts: np.ndarray,
        part: int,
        material: int,
        rgb: tuple[float, ...],
        *,
        layer: int,
        inside: np.ndarray,
        body: bool = False,
    ) -> int:
        """Add a face of a convex part; it is oriented so its normal points away from ``inside``."""
        pts = np.asarray(pts, dtype=np.float64)
        n = _newell(pts)
        c = pts.mean(0)
        if np.dot(n, c - inside) < 0:
            pts = pts[::-1]
            n = -n
        i = len(self.polys)
        self.polys.append(self._add_vertices(pts))
        self.owner.append(i)
        self.part.append(part)
        self.layer.append(layer)
        self.material.append(material)
        self.rgb.append(tuple(rgb))
        self.body.append(body)
        self.face_normals[i] = n
        self.face_centroids[i] = c
        return i

    def decal(
        self, pts: np.ndarray, owner: int, material: int, rgb: tuple[float, ...], body: bool = False
    ) -> int:
        i = len(self.polys)
        self.polys.append(self._add_vertices(pts))
        self.owner.append(owner)
        self.part.append(self.part[owner])
        self.layer.append(self.layer[owner])
        self.material.append(material)
        self.rgb.append(tuple(rgb))
        self.body.append(body)
        return i

    def build(self, footprint: np.ndarray, top: float) -> Mesh:
        owner = np.array(self.owner)
        normals = np.stack([self.face_normals[o] for o in owner])
        centroids = np.stack([self.face_centroids[o] for o in owner])
        return Mesh(
            vertices=np.concatenate(self.vertices),
            polys=self.polys,
            owner=owner,
            part=np.array(self.part),
            layer=np.array(self.layer),
            material=np.array(self.material),
            rgb=np.array(self.rgb, dtype=np.float64),
            body=np.array(self.body),
            normals=normals,
            centroids=centroids,
            part_centroids=np.stack(self.part_centroids),
            footprint=footprint,
            top_height=top,
        )


def _newell(pts: np.ndarray) -> np.ndarray:
    """Unit normal of a (roughly planar) polygon by Newell's method. pts: (n, 3)."""
    nxt = np.roll(pts, -1, axis=0)
    n = np.array(
        [
            np.sum((pts[:, 1] - nxt[:, 1]) * (pts[:, 2] + nxt[:, 2])),
            np.sum((pts[:, 2] - nxt[:, 2]) * (pts[:, 0] + nxt[:, 0])),
            np.sum((pts[:, 0] - nxt[:, 0]) * (pts[:, 1] + nxt[:, 1])),
        ]
    )
    return n / (np.linalg.norm(n) + 1e-12)


def _bilinear(quad: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """Sub-quad of a quad (4, 3) ordered (a, b, c, d) with u along a→b and v along a→d."""
    a, b, c, d = quad

    def at(u: float, v: float) -> np.ndarray:
        return (1 - v) * ((1 - u) * a + u * b) + v * ((1 - u) * d + u * c)

    return np.stack([at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)])


def _circle(cx: float, cz: float, y: float, r: float, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), np.full(n, y), cz + r * np.sin(t)], axis=1)


def _prism(
    b: _Builder,
    profile: list[tuple[float, float]],
    half_widths: list[float],
    *,
    layer: int,
    side_rgb: tuple[float, ...],
    strip_rgb: list[tuple[float, ...]],
    strip_material: list[int],
    skip: tuple[int, ...] = (),
    y0: float = 0.0,
    body: bool = True,
) -> tuple[int, dict[str, int], dict[int, int], dict[int, np.ndarray]]:
    """Extrude a convex (x, z) profile across the width; returns (part, side faces, strip faces, strip quads).

    Strip ``k`` joins profile points k and k+1; its quad is ordered (left_k, right_k, right_k+1,
    left_k+1) so decals use u across the width (left→right) and v along the profile edge.
    """
    prof = np.asarray(profile, dtype=np.float64)
    hw = np.asarray(half_widths, dtype=np.float64)
    left = np.stack([prof[:, 0], y0 + hw, prof[:, 1]], axis=1)
    right = np.stack([prof[:, 0], y0 - hw, prof[:, 1]], axis=1)
    inside = np.concatenate([left, right]).mean(0)
    part = b.new_part(np.concatenate([left, right]), layer)
    sides = {
        "left": b.face(left, part, BODY, side_rgb, layer=layer, inside=inside, body=body),
        "right": b.face(right, part, BODY, side_rgb, layer=layer, inside=inside, body=body),
    }
    strips: dict[int, int] = {}
    quads: dict[int, np.ndarray] = {}
    n = len(prof)
    for k in range(n):
        if k in skip:
            continue
        k1 = (k + 1) % n
        quad = np.stack([left[k], right[k], right[k1], left[k1]])
        mat = strip_material[k]
        strips[k] = b.face(
            quad, part, mat, strip_rgb[k], layer=layer, inside=inside, body=body and mat == BODY
        )
        quads[k] = quad
    return part, sides, strips, quads


def build_mesh(spec: VehicleSpec) -> Mesh:
    """Polygons of one identity's vehicle (vehicle frame, metres)."""
    d = spec.dims
    t = spec.type_name
    L, W, zc, hb, hr = d["L"], d["W"], d["zc"], d["hb"], d["hr"]
    hw = W / 2
    body_rgb = spec.rgb
    glass = (0.10, 0.12, 0.15)
    b = _Builder()
    marks = spec.marks

    # ---- lower body: rear-bottom, front-bottom, nose, hood front, deck rear, tail -------------
    xf, xr = L / 2, -L / 2
    nose, tail = d["nose"], d["tail"]
    drop_f = min(0.35 * (hb - zc), 0.22)
    drop_r = min(0.25 * (hb - zc), 0.15)
    profile = [
        (xr, zc),
        (xf, zc),
        (xf, hb - drop_f),
        (xf - nose, hb),
        (xr + tail, hb),
        (xr, hb - drop_r),
    ]
    lower_rgb = [body_rgb] * 6
    _, sides, strips, quads = _prism(
        b,
        profile,
        # a slight shoulder: the top of the lower body is narrower than its skirt
        [hw, hw, hw - 0.02, hw - 0.07, hw - 0.07, hw - 0.02],
        layer=0,
        side_rgb=body_rgb,
        strip_rgb=lower_rgb,
        strip_material=[DARK, BODY, BODY, BODY, BODY, BODY],
        skip=(0,),
    )
    front_q, rear_q, deck_q = quads[1], quads[5], quads[3]
    front_f, rear_f, deck_f = strips[1], strips[5], strips[3]
    # rear quad runs from tail top to bottom: flip so v goes up
    rear_q = rear_q[[3, 2, 1, 0]]

    # ---- lights, grille, plates -------------------------------------------------------------
    style = spec.light_style
    head = {0: (0.04, 0.26, 0.55, 0.85), 1: (0.03, 0.30, 0.72, 0.88), 2: (0.06, 0.2, 0.5, 0.9)}[
        style
    ]
    u0, u1, v0, v1 = head
    for a0, a1 in ((u0, u1), (1 - u1, 1 - u0)):
        b.decal(_bilinear(front_q, a0, a1, v0, v1), front_f, LIGHT, (0.95, 0.93, 0.82))
    b.decal(_bilinear(front_q, 0.32, 0.68, 0.42, 0.86), front_f, PAINT, spec.grille_rgb)
    tail_v = (0.5, 0.85) if style != 1 else (0.62, 0.82)
    for a0, a1 in ((0.03, 0.24), (0.76, 0.97)):
        b.decal(_bilinear(rear_q, a0, a1, *tail_v), rear_f, LIGHT, (0.80, 0.06, 0.05))
    if style == 1:  # light bar across the back
        b.decal(_bilinear(rear_q, 0.24, 0.76, 0.66, 0.78), rear_f, LIGHT, (0.60, 0.05, 0.05))
    plate_grey = spec.plate[0]
    for q, f in ((front_q, front_f), (rear_q, rear_f)):
        b.decal(_bilinear(q, 0.38, 0.62, 0.12, 0.36), f, PAINT, (plate_grey, plate_grey, 0.8))
        for pos in spec.plate[1:]:
            u = 0.38 + 0.24 * pos
            b.decal(_bilinear(q, u - 0.012, u + 0.012, 0.17, 0.31), f, PAINT, (0.1, 0.1, 0.15))
    # bumper line
    b.decal(_bilinear(front_q, 0.0, 1.0, 0.0, 0.12), front_f, PAINT, (0.12, 0.12, 0.13))
    b.decal(_bilinear(rear_q, 0.0, 1.0, 0.0, 0.12), rear_f, PAINT, (0.12, 0.12, 0.13))

    # ---- side decals: wheels, stripes, skirts, stickers ---------------------------------------
    r = d["wheel"]
    axles = [xf - max(0.75, 0.2 * L) + 0.1 * r, xr + max(0.75, 0.2 * L) - 0.1 * r]
    if t == "truck":
        axles.append(axles[1] + 2.3 * r)
    if t == "bus":
        axles = [xf - 2.6, xr + 3.0]
    for side, sgn in (("left", 1), ("right", -1)):
        f = sides[side]
        y = sgn * (hw + 0.01)
        if "skirt" in marks:
            h = 0.3 * (hb - zc)
            pts = [(xr, zc), (xf, zc), (xf, zc + h), (xr, zc + h)]
            b.decal(np.array([(x, y, z) for x, z in pts]), f, PAINT, marks["skirt"]["rgb"])
        if "stripe" in marks:
            m = marks["stripe"]
            zm = zc + m["z"] * (hb - zc)
            h = m["h"] * (hb - zc)
            pts = [
                (xr + 0.05, zm - h),
                (xf - 0.05, zm - h),
                (xf - 0.05, zm + h),
                (xr + 0.05, zm + h),
            ]
            b.decal(np.array([(x, y, z) for x, z in pts]), f, PAINT, m["rgb"])
        if "sticker" in marks and not marks["sticker"]["rear"]:
            m = marks["sticker"]
            s = m["size"]
            cx, cz = m["x"] * L, zc + m["z"] * (hb - zc)
            pts = [
                (cx - s, cz - s / 2),
                (cx + s, cz - s / 2),
                (cx + s, cz + s / 2),
                (cx - s, cz + s / 2),
            ]
            b.decal(np.array([(x, y, z) for x, z in pts]), f, PAINT, m["rgb"])
        for ax in axles:
            t_arch = np.linspace(0, np.pi, 8)
            arch = np.stack(
                [
                    ax + 1.2 * r * np.cos(t_arch),
                    np.full(8, y + sgn * 0.01),
                    r + 1.2 * r * np.sin(t_arch),
                ],
                axis=1,
            )
            b.decal(arch, f, PAINT, (0.02, 0.02, 0.025))  # the wheel well
            b.decal(_circle(ax, r, y + sgn * 0.02, r * 1.08, 12), f, PAINT, (0.04, 0.04, 0.045))
            b.decal(_circle(ax, r, y + sgn * 0.03, r * 0.62, 10), f, PAINT, spec.rim_rgb)
            b.decal(_circle(ax, r, y + sgn * 0.04, r * 0.18, 6), f, PAINT, (0.2, 0.2, 0.22))
    if "sticker" in marks and marks["sticker"]["rear"]:
        m = marks["sticker"]
        b.decal(_bilinear(rear_q, 0.58, 0.72, 0.45, 0.62), rear_f, PAINT, m["rgb"])
    if "hood_stripe" in marks:
        m = marks["hood_stripe"]
        w = m["w"]
        bands = [(0.5 - w / 2, 0.5 + w / 2)]
        if m["double"]:
            bands = [(0.5 - w / 2, 0.5 - w / 8), (0.5 + w / 8, 0.5 + w / 2)]
        for a0, a1 in bands:
            b.decal(_bilinear(deck_q, a0, a1, 0.0, 1.0), deck_f, PAINT, m["rgb"])
            b.decal(_bilinear(front_q, a0, a1, 0.86, 1.0), front_f, PAINT, m["rgb"])
    if t == "pickup":  # open bed: dark floor behind the cab (deck v runs front -> rear)
        cab_rear = xf - d["hood"] - d["wind"] - d["roof"] - d["rear"]
        deck_front, deck_len = xf - nose, (xf - nose) - (xr + tail)
        bed0 = float(np.clip((deck_front - (cab_rear - 0.1)) / deck_len, 0.3, 0.9))
        b.decal(_bilinear(deck_q, 0.06, 0.94, bed0, 0.97), deck_f, PAINT, (0.1, 0.1, 0.1))

    # ---- cabin / upper body -----------------------------------------------------------------
    xb1 = xf - d["hood"]
    xr1 = xb1 - d["wind"]
    xr0 = max(xr1 - d["roof"], xr + 0.05)
    xb0 = min(max(xr0 - d["rear"], xr + 0.02), xr0)
    wb, wt = hw - 0.03, hw - d["taper"]
    roof_rgb = marks["two_tone"]["rgb"] if "two_tone" in marks else body_rgb
    cab_profile = [(xb0, hb), (xb1, hb), (xr1, hr), (xr0, hr)]
    if t == "truck":
        cab_profile = [(xb1 - 2.0, hb), (xb1, hb), (xr1, hr), (xb1 - 2.0, hr)]
    _, csides, cstrips, cquads = _prism(
        b,
        cab_profile,
        [wb, wb, wt, wt],
        layer=1,
        side_rgb=body_rgb,
        strip_rgb=[body_rgb, glass, roof_rgb, glass],
        strip_material=[BODY, GLASS, BODY, GLASS],
        skip=(0,),
    )
    # windshield / rear window frames are body-coloured rims: shrink glass a little by decals
    wind_f, roof_f, back_f = cstrips[1], cstrips[2], cstrips[3]
    if "two_tone" in marks:
        b.body[roof_f] = False
    # side windows: split by pillars
    n_win = {"bus": max(4, int((xb1 - xb0) / 1.3)), "RV": 4, "van": 3, "truck": 1, "pickup": 1}
    nw = n_win.get(t, 2)
    win_v = (0.42, 0.9) if t in ("bus", "RV") else (0.14, 0.88)
    if t == "truck":
        win_v = (0.45, 0.9)
    for side in ("left", "right"):
        f = csides[side]
        base_l = np.array([[xb0, 0, hb], [xb1, 0, hb]])
        top_l = np.array([[xr0, 0, hr], [xr1, 0, hr]])
        if t == "truck":
            base_l[0, 0] = top_l[0, 0] = xb1 - 2.0
        y_b = wb if side == "left" else -wb
        y_t = wt if side == "left" else -wt
        quad = np.array(
            [
                [base_l[0, 0], y_b * 1.002, hb],
                [base_l[1, 0], y_b * 1.002, hb],
                [top_l[1, 0], y_t * 1.002, hr],
                [top_l[0, 0], y_t * 1.002, hr],
            ]
        )
        edges = np.linspace(0.03, 0.97, nw + 1)
        gap = 0.04 if nw < 4 else 0.015
        for i in range(nw):
            a0 = edges[i] + (gap if i else 0.0)
            a1 = edges[i + 1] - (gap if i < nw - 1 else 0.0)
            if t == "truck":
                a0, a1 = 0.55, 0.95
            b.decal(_bilinear(quad, a0, a1, *win_v), f, GLASS, glass)
        if "stripe" in marks and t in ("bus", "RV", "van", "truck"):
            m = marks["stripe"]
            b.decal(_bilinear(quad, 0.0, 1.0, 0.2, 0.32), f, PAINT, m["rgb"])
    if t in ("bus", "RV", "van", "truck"):
        # big glass area: windshield already glass; add a body-coloured band at its bottom
        b.decal(_bilinear(cquads[1], 0.0, 1.0, 0.0, 0.12), wind_f, BODY, body_rgb, body=True)
    if "sunroof" in marks:
        b.decal(_bilinear(cquads[2], 0.25, 0.75, 0.3, 0.6), roof_f, GLASS, marks["sunroof"]["rgb"])
    if "hood_stripe" in marks:
        m = marks["hood_stripe"]
        w = m["w"]
        b.decal(_bilinear(cquads[2], 0.5 - w / 2, 0.5 + w / 2, 0.0, 1.0), roof_f, PAINT, m["rgb"])
    if "sticker" in marks and marks["sticker"]["rear"] and t not in ("truck",):
        b.decal(_bilinear(cquads[3], 0.15, 0.3, 0.2, 0.45), back_f, PAINT, marks["sticker"]["rgb"])

    # ---- mirrors ------------------------------------------------------------------------------
    mx = xb1 - 0.12
    for sgn in (1, -1):
        y0 = sgn * (hw + 0.09)
        _prism(
            b,
            [
                (mx - 0.1, hb + 0.02),
                (mx + 0.05, hb + 0.02),
                (mx + 0.05, hb + 0.2),
                (mx - 0.1, hb + 0.2),
            ],
            [0.09] * 4,
            layer=1,
            side_rgb=body_rgb,
            strip_rgb=[body_rgb] * 4,
            strip_material=[BODY] * 4,
            y0=y0,
            body=False,
        )

    # ---- cargo box (truck), spoiler, roof rack -----------------------------------------------
    if t == "truck":
        x1 = xb1 - 2.1
        box_rgb = spec.cargo_rgb or (0.9, 0.9, 0.9)
        hbox = hr + 0.45
        _prism(
            b,
            [(xr + 0.05, hb), (x1, hb), (x1, hbox), (xr + 0.05, hbox)],
            [hw + 0.02] * 4,
            layer=1,
            side_rgb=box_rgb,
            strip_rgb=[box_rgb] * 4,
            strip_material=[BODY] * 4,
            body=False,
        )
    if "spoiler" in marks:
        c = marks["spoiler"]["rgb"]
        x0 = xr + 0.04
        z0 = hb + 0.12
        _prism(
            b,
            [(x0, z0), (x0 + 0.28, z0 + 0.02), (x0 + 0.28, z0 + 0.06), (x0, z0 + 0.07)],
            [wb - 0.05] * 4,
            layer=1,
            side_rgb=c,
            strip_rgb=[c] * 4,
            strip_material=[BODY] * 4,
            body=False,
        )
    if "roof_rack" in marks:
        c = marks["roof_rack"]["rgb"]
        for xm in (xr0 + 0.25 * (xr1 - xr0), xr0 + 0.75 * (xr1 - xr0)):
            _prism(
                b,
                [
                    (xm - 0.04, hr + 0.01),
                    (xm + 0.04, hr + 0.01),
                    (xm + 0.04, hr + 0.07),
                    (xm - 0.04, hr + 0.07),
                ],
                [wt + 0.04] * 4,
                layer=2,
                side_rgb=c,
                strip_rgb=[c] * 4,
                strip_material=[BODY] * 4,
                body=False,
            )
        for sgn in (1, -1):
            _prism(
                b,
                [
                    (xr0 + 0.1, hr + 0.06),
                    (xr1 - 0.1, hr + 0.06),
                    (xr1 - 0.1, hr + 0.1),
                    (xr0 + 0.1, hr + 0.1),
                ],
                [0.03] * 4,
                layer=2,
                side_rgb=c,
                strip_rgb=[c] * 4,
                strip_material=[BODY] * 4,
                y0=sgn * (wt - 0.05),
                body=False,
            )
    footprint = np.array([[xr, -hw], [xf, -hw], [xf, hw], [xr, hw]])
    top = hr + 0.45 if t == "truck" else hr
    return b.build(footprint, top)
