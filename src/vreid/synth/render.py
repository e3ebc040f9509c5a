"""Rendering one image: a crop of a camera's view of one vehicle, with the camera's image quality.

Per image: project the vehicle's mesh into the camera, choose the crop window around its
projected box (margin, offset, truncation), crop the cached background into a 2× supersampled
canvas, draw the shadow, the foreground props behind the vehicle, the vehicle's visible polygons
(back-face culled, parts in layer/depth order, Lambert + specular shading), the props in front;
then reduce to the output size and apply the camera: resolution loss, blur, exposure, white
balance, saturation, gamma (one lookup table), sensor noise and JPEG quality.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vreid.synth.camera import SENSOR, CameraSpec
from vreid.synth.scene import Prop, draw_prop, foreground_props, render_background
from vreid.synth.vehicles import BODY, GLASS, LIGHT, Mesh, VehicleSpec, build_mesh


@dataclass(frozen=True)
class FrameSpec:
    """Everything that varies per image (all drawn in the planning step, so rendering is pure)."""

    vehicle: int
    """Index into the renderer's vehicle list."""
    camera: int
    """Index into the renderer's camera list."""
    s: float
    """Position along the road (m)."""
    lateral: float
    """Offset across the road (m)."""
    heading: float
    """Vehicle yaw in the world (radians)."""
    margin: float
    """Crop margin on each side, as a fraction of the box's larger side."""
    offset: tuple[float, float]
    """Shift of the crop window's centre, as a fraction of the window size."""
    truncate: tuple[float, float]
    """Shift of the window that pushes this fraction of the box outside it (x, y; signed)."""
    brightness: float
    """Per-frame exposure multiplier."""
    seed: int
    """Seed of this image's sensor noise."""
    occluder: tuple[int, float, float, float] | None = None
    """Another vehicle in the scene: (vehicle index, s, lateral, heading), drawn in depth order."""


@dataclass
class Rendered:
    image: Image.Image
    box: tuple[float, float, float, float]
    """True vehicle box in output pixels (x1, y1, x2, y2), clipped to the image."""
    orientation: float
    """Vehicle heading relative to the camera's viewing direction, degrees in [0, 360)."""
    mask: np.ndarray | None = None
    """(H, W) bool: pixels showing body-coloured paint (only when asked for)."""


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of 2-D points (n, 2), counter-clockwise."""
    pts = sorted(map(tuple, points))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def camera_lut(cam: CameraSpec, brightness: float = 1.0) -> list[int]:
    """Per-channel lookup table (768 entries) for the camera's exposure, white balance and gamma."""
    x = np.arange(256, dtype=np.float64) / 255.0
    out = []
    for c in range(3):
        y = (x**cam.gamma) * cam.gain * brightness * cam.cast[c]
        out.append(np.clip(np.round(y * 255), 0, 255).astype(np.int64))
    return np.concatenate(out).tolist()


class Renderer:
    """Renders :class:`FrameSpec` s for a fixed list of vehicles and cameras (caches meshes,
    backgrounds, props and a noise bank; one per process)."""

    def __init__(
        self,
        vehicles: list[VehicleSpec],
        cameras: list[CameraSpec],
        size: tuple[int, int] = (256, 256),
        *,
        supersample: int = 2,
        background_cache: int = 6,
        reference: bool = False,
        background_dir: str | None = None,
    ) -> None:
        """``reference=True`` renders the same scene the straightforward way (antialiased
        background resampling from full resolution, a Gaussian blur filter, float colour
        arithmetic per pixel, fresh noise per image) — the baseline of the speed benchmark.
        ``background_dir`` holds backgrounds rendered once by :func:`save_background` (shared by
        worker processes); missing ones are rendered here."""
        self.vehicles = vehicles
        self.cameras = cameras
        self.size = size
        self.ss = supersample
        self._meshes: dict[int, Mesh] = {}
        self._backgrounds: OrderedDict[int, list[Image.Image]] = OrderedDict()
        self._props: dict[int, list[Prop]] = {}
        self._cache_size = background_cache
        self.reference = reference
        self.background_dir = background_dir
        w, h = size
        self._noise = np.random.default_rng(12345).standard_normal(
            (2 * h, 2 * w, 3), dtype=np.float32
        )

    def mesh(self, vehicle: int) -> Mesh:
        m = self._meshes.get(vehicle)
        if m is None:
            m = self._meshes[vehicle] = build_mesh(self.vehicles[vehicle])
        return m

    def background(self, camera: int) -> list[Image.Image]:
        """The camera's background as a pyramid: sensor resolution, 1/2, 1/4."""
        bg = self._backgrounds.get(camera)
        if bg is None:
            full = None
            if self.background_dir is not None:
                path = os.path.join(self.background_dir, f"{camera}.npy")
                if os.path.exists(path):
                    full = Image.fromarray(np.load(path))
            if full is None:
                full = render_background(self.cameras[camera])
            bg = [full, full.reduce(2), full.reduce(4)]
            self._backgrounds[camera] = bg
            if len(self._backgrounds) > self._cache_size:
                self._backgrounds.popitem(last=False)
        else:
            self._backgrounds.move_to_end(camera)
        return bg

    def _background_crop(
        self, camera: int, window: tuple[float, float, float, float]
    ) -> Image.Image:
        """The window (x, y, w, h) of the background, resampled to the supersampled canvas.

        Nearest-neighbour sampling from the coarsest pyramid level whose pixels are no larger
        than an output pixel (two canvas pixels): the 2× reduction then averages it, and small
        windows (source pixels larger than output pixels) are smoothed by the resolution loss
        step. Bilinear resampling costs 30× more for no visible gain.
        """
        levels = self.background(camera)
        x, y, w, h = window
        out_w = self.size[0] * self.ss
        if self.reference:
            box0 = (x, y, x + w, y + h)
            return levels[0].resize((out_w, self.size[1] * self.ss), Image.BILINEAR, box=box0)
        level = 0
        while level + 1 < len(levels) and w / 2 ** (level + 1) >= out_w / 2:
            level += 1
        f = 2.0**-level
        box = (x * f, y * f, (x + w) * f, (y + h) * f)
        return levels[level].resize((out_w, self.size[1] * self.ss), Image.NEAREST, box=box)

    def props(self, camera: int) -> list[Prop]:
        p = self._props.get(camera)
        if p is None:
            p = self._props[camera] = foreground_props(self.cameras[camera])
        return p

    # ------------------------------------------------------------------------------------------
    def _draw_shadow(self, draw, cam: CameraSpec, mesh: Mesh, rz, pos, to_out) -> None:
        """Contact shadow under the body plus the body's shadow cast along the light."""
        light = cam.light_direction
        ground = np.concatenate([mesh.footprint, np.zeros((4, 1))], axis=1) @ rz.T + pos
        ground[:, 2] = 0
        top = ground.copy()
        top[:, 2] = mesh.top_height * 0.85
        cast_pts = top - top[:, 2:3] * (light / max(light[2], 0.2))
        hull = _convex_hull(np.concatenate([ground[:, :2], cast_pts[:, :2]]))
        hull3 = np.concatenate([hull, np.zeros((len(hull), 1))], axis=1)
        sh_uv = to_out(cam.project(hull3))
        draw.polygon(sh_uv.ravel().tolist(), fill=(0, 0, 0, int(40 + 120 * cam.diffuse)))
        centre = ground.mean(0)
        contact = centre + (ground - centre) * 1.04
        draw.polygon(to_out(cam.project(contact)).ravel().tolist(), fill=(0, 0, 0, 90))

    def _draw_vehicle(
        self, draw, mdraw, cam: CameraSpec, vehicle: int, rz, pos, to_out, uv, is_target: bool
    ) -> None:
        """Draw a vehicle's visible polygons (and, for the target, its body mask)."""
        mesh = self.mesh(vehicle)
        spec = self.vehicles[vehicle]
        if uv is None:
            rc = cam.rotation
            uv = cam.project_camera(mesh.vertices @ (rc @ rz).T + rc @ (pos - cam.position))
        cv = rz.T @ (cam.position - pos)
        lv = rz.T @ cam.light_direction
        vis = np.einsum("ij,ij->i", mesh.normals, cv - mesh.centroids) > 0
        lam = np.maximum(0.0, mesh.normals @ lv)
        view = cv - mesh.centroids
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        half = view + lv
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        spec_term = np.maximum(0.0, np.einsum("ij,ij->i", mesh.normals, half)) ** 24
        shade = (cam.ambient + cam.diffuse * lam)[:, None]
        rgb = mesh.rgb * shade
        mat = mesh.material
        body = mat == BODY
        rgb[body] += (0.15 + spec.metallic) * cam.diffuse * spec_term[body, None]
        glass = mat == GLASS
        sky = np.array([0.55, 0.62, 0.7])
        up = np.clip(mesh.normals[glass, 2], 0, 1)[:, None]
        rgb[glass] = mesh.rgb[glass] * shade[glass] + 0.2 * up * sky + 0.4 * spec_term[glass, None]
        light_mat = mat == LIGHT
        rgb[light_mat] = mesh.rgb[light_mat] * (0.55 + 0.4 * shade[light_mat])
        colours = np.clip(rgb * 255, 0, 255).astype(np.int64).tolist()

        part_layer = np.zeros(len(mesh.part_centroids), dtype=np.int64)
        part_layer[mesh.part] = mesh.layer
        pdist = np.linalg.norm(mesh.part_centroids - cv, axis=1)
        part_rank = np.empty_like(part_layer)
        part_rank[np.lexsort((-pdist, part_layer))] = np.arange(len(part_layer))
        idx = np.flatnonzero(vis)
        order = idx[np.argsort(part_rank[mesh.part[idx]], kind="stable")]
        pts = to_out(uv).ravel().tolist()
        spans = mesh.spans
        body_poly = mesh.body
        for i in order.tolist():
            a, b = spans[i]
            poly = pts[2 * a : 2 * b]
            draw.polygon(poly, fill=tuple(colours[i]))
            if mdraw is not None:
                mdraw.polygon(poly, fill=255 if (is_target and body_poly[i]) else 0)

    def render(self, frame: FrameSpec, *, mask: bool = False) -> Rendered:
        """Render one image."""
        cam = self.cameras[frame.camera]
        mesh = self.mesh(frame.vehicle)
        W, H = self.size
        ss = self.ss

        ch, sh = np.cos(frame.heading), np.sin(frame.heading)
        rz = np.array([[ch, -sh, 0.0], [sh, ch, 0.0], [0.0, 0.0, 1.0]])
        pos = cam.road_point(frame.s, frame.lateral)
        rc = cam.rotation
        pc = mesh.vertices @ (rc @ rz).T + rc @ (pos - cam.position)
        uv = cam.project_camera(pc)

        # crop window in sensor pixels
        x1, y1 = uv.min(0)
        x2, y2 = uv.max(0)
        bw, bh = x2 - x1, y2 - y1
        aspect = W / H
        win_w = max(bw, bh * aspect) * (1 + 2 * frame.margin)
        win_w = min(win_w, SENSOR[0], SENSOR[1] * aspect)
        win_h = win_w / aspect
        cx = (x1 + x2) / 2 + frame.offset[0] * win_w
        cy = (y1 + y2) / 2 + frame.offset[1] * win_h
        # truncation: move the window so a fraction of the box falls outside it
        tx, ty = frame.truncate
        if tx:
            edge = (cx + win_w / 2) if tx > 0 else (cx - win_w / 2)
            target = (x2 - abs(tx) * bw) if tx > 0 else (x1 + abs(tx) * bw)
            cx += target - edge
        if ty:
            edge = (cy + win_h / 2) if ty > 0 else (cy - win_h / 2)
            target = (y2 - abs(ty) * bh) if ty > 0 else (y1 + abs(ty) * bh)
            cy += target - edge
        wx0 = float(np.clip(cx - win_w / 2, 0, SENSOR[0] - win_w))
        wy0 = float(np.clip(cy - win_h / 2, 0, SENSOR[1] - win_h))
        k = W * ss / win_w
        origin = np.array([wx0, wy0])

        def to_out(p: np.ndarray) -> np.ndarray:
            return (p - origin) * k

        canvas = self._background_crop(frame.camera, (wx0, wy0, win_w, win_h))
        draw = ImageDraw.Draw(canvas, "RGBA")
        mdraw = None
        mimg = None
        if mask:
            mimg = Image.new("L", canvas.size, 0)
            mdraw = ImageDraw.Draw(mimg)

        # vehicles (the target and possibly another one) far to near, with their shadows first
        vehicles = [(float(np.linalg.norm(pos - cam.position)), True, frame.vehicle, rz, pos)]
        if frame.occluder is not None:
            ov, os_, olat, ohead = frame.occluder
            c, s_ = np.cos(ohead), np.sin(ohead)
            orz = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
            opos = cam.road_point(os_, olat)
            vehicles.append((float(np.linalg.norm(opos - cam.position)), False, ov, orz, opos))
        vehicles.sort(key=lambda v: -v[0])
        for _, _, vi, vrz, vpos in vehicles:
            self._draw_shadow(draw, cam, self.mesh(vi), vrz, vpos, to_out)

        # props behind the target vehicle
        vdist = float(np.linalg.norm(pos - cam.position)) - 1.0
        front_props = []
        for prop in self.props(frame.camera):
            d = float(np.linalg.norm(np.array(prop.position) - cam.position))
            if d < vdist:
                front_props.append(prop)
            else:
                draw_prop(draw, cam, prop, to_out)

        for _, is_target, vi, vrz, vpos in vehicles:
            vuv = uv if is_target else None
            self._draw_vehicle(draw, mdraw, cam, vi, vrz, vpos, to_out, vuv, is_target)

        for prop in front_props:
            draw_prop(draw, cam, prop, to_out)
            if mdraw is not None:
                draw_prop(mdraw, cam, prop, to_out, fill=0)

        # reduce and apply the camera
        img = canvas.reduce(ss) if ss > 1 else canvas
        if self.reference:
            return self._finish_reference(
                img, frame, cam, win_w, to_out, (x1, y1, x2, y2), pos, mimg
            )
        # resolution loss and optical blur: a blur of sigma pixels removes detail like a
        # (1 + sigma)-times smaller sensor; the small remainder is a 3×3 smoothing kernel
        native = min(win_w * cam.resolution, W / (1 + 0.8 * cam.blur))
        if native < 0.9 * W:
            nw = max(8, round(native))
            nh = max(8, round(native / aspect))
            img = img.resize((nw, nh), Image.BILINEAR).resize((W, H), Image.BILINEAR)
        elif cam.blur > 0.25:
            img = img.filter(_smoothing_kernel(cam.blur))
        img = img.point(camera_lut(cam, frame.brightness))
        if cam.saturation != 1.0:
            grey = img.convert("L").convert("RGB")
            img = Image.blend(grey, img, cam.saturation)
        rng = np.random.default_rng(frame.seed)
        oy, ox = int(rng.integers(H)), int(rng.integers(W))
        arr = np.asarray(img, dtype=np.float32) + self._noise[oy : oy + H, ox : ox + W] * cam.noise
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

        return self._result(img, frame, cam, to_out, (x1, y1, x2, y2), pos, mimg)

    def _result(self, img, frame, cam, to_out, sensor_box, pos, mimg) -> Rendered:
        W, H = self.size
        x1, y1, x2, y2 = sensor_box
        bx = np.clip(to_out(np.array([[x1, y1], [x2, y2]])) / self.ss, 0, [W, H])
        box = (float(bx[0, 0]), float(bx[0, 1]), float(bx[1, 0]), float(bx[1, 1]))
        view_dir = pos - cam.position
        orientation = float(
            np.rad2deg(frame.heading - np.arctan2(view_dir[1], view_dir[0])) % 360.0
        )
        m = None
        if mimg is not None:
            m = np.asarray(mimg.reduce(self.ss) if self.ss > 1 else mimg) > 200
        return Rendered(img, box, orientation, m)

    def _finish_reference(self, img, frame, cam, win_w, to_out, sensor_box, pos, mimg) -> Rendered:
        """The camera model computed the straightforward way (for the speed benchmark)."""
        W, H = self.size
        native = win_w * cam.resolution
        if native < 0.9 * W:
            nw, nh = max(8, round(native)), max(8, round(native * H / W))
            img = img.resize((nw, nh), Image.BILINEAR).resize((W, H), Image.BILINEAR)
        if cam.blur > 0.25:
            img = img.filter(ImageFilter.GaussianBlur(cam.blur))
        arr = np.asarray(img, dtype=np.float64) / 255.0
        arr = arr**cam.gamma * cam.gain * frame.brightness * np.array(cam.cast)
        grey = arr @ np.array([0.299, 0.587, 0.114])
        arr = grey[..., None] + cam.saturation * (arr - grey[..., None])
        rng = np.random.default_rng(frame.seed)
        arr = arr * 255 + rng.standard_normal(arr.shape) * cam.noise
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return self._result(img, frame, cam, to_out, sensor_box, pos, mimg)


def save_background(camera: CameraSpec, index: int, folder: str) -> None:
    """Render a camera's background into ``folder/<index>.npy`` (shared by worker processes)."""
    path = os.path.join(folder, f"{index}.npy")
    tmp = path + f".{os.getpid()}.tmp.npy"
    np.save(tmp, np.asarray(render_background(camera)))
    os.replace(tmp, path)


def _smoothing_kernel(sigma: float) -> ImageFilter.Kernel:
    """3×3 Gaussian-like kernel with standard deviation ``sigma`` (pixels, <= ~1)."""
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * sigma**2))
    k = np.outer(g, g)
    return ImageFilter.Kernel((3, 3), (k / k.sum()).ravel().tolist(), scale=1)
