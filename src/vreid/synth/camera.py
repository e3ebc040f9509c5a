"""Perspective road cameras: pose, road geometry, light and image-quality settings.

World frame: the ground is z = 0, the camera stands at (0, 0, height) and looks at the point
(0, distance, 0) on the road. The road passes through that point along ``road_angle`` (0: across
the view, vehicles seen from the side; π/2: along the line of sight, seen from the front or rear).
Camera frame: x right, y down, z forward; sensor pixels (u, v) = f·(x, y)/z + centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

SENSOR = (1920, 1080)
"""Sensor size (width, height) in pixels of every camera."""
LANE_WIDTH = 3.5


@dataclass(frozen=True)
class CameraSpec:
    """One camera: geometry, road, light and image-quality settings (fixed for all its images)."""

    camera_id: int
    height: float
    """Camera height above the ground (m)."""
    distance: float
    """Ground distance from the camera's foot to the point it looks at (m)."""
    road_angle: float
    """Road direction in the ground plane, radians from the camera's right axis."""
    focal: float
    """Focal length in sensor pixels."""
    roll: float
    """Camera roll (radians)."""
    lanes: int
    """Number of lanes (half in each direction)."""
    light_azimuth: float
    """Direction the sunlight comes from, radians in the ground plane."""
    light_elevation: float
    ambient: float
    diffuse: float
    gain: float
    """Exposure: multiplies the image."""
    cast: tuple[float, float, float]
    """White-balance error: per-channel multipliers."""
    saturation: float
    """Colour saturation of the camera (1: unchanged)."""
    gamma: float
    blur: float
    """Gaussian blur radius in output pixels."""
    noise: float
    """Sensor noise standard deviation (0..255 scale)."""
    jpeg_quality: int
    resolution: float
    """Sensor sharpness: the fraction of a crop's sensor pixels that carry detail (0..1]."""
    scene_seed: int
    """Seed of this camera's background scene."""

    # ---------------------------------------------------------------------------------------
    @cached_property
    def position(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.height])

    @cached_property
    def target(self) -> np.ndarray:
        return np.array([0.0, self.distance, 0.0])

    @cached_property
    def road_direction(self) -> np.ndarray:
        return np.array([np.cos(self.road_angle), np.sin(self.road_angle), 0.0])

    @cached_property
    def road_normal(self) -> np.ndarray:
        return np.array([-np.sin(self.road_angle), np.cos(self.road_angle), 0.0])

    @property
    def road_half_width(self) -> float:
        return self.lanes * LANE_WIDTH / 2

    @cached_property
    def light_direction(self) -> np.ndarray:
        """Unit vector pointing towards the light (world)."""
        ce = np.cos(self.light_elevation)
        return np.array(
            [
                ce * np.cos(self.light_azimuth),
                ce * np.sin(self.light_azimuth),
                np.sin(self.light_elevation),
            ]
        )

    @cached_property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation (3, 3): rows are the camera's right, down and forward axes."""
        fwd = self.target - self.position
        fwd = fwd / np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        c, s = np.cos(self.roll), np.sin(self.roll)
        right, down = c * right + s * down, -s * right + c * down
        return np.stack([right, down, fwd])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3)."""
        return (points - self.position) @ self.rotation.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> sensor pixels (N, 2); points must lie in front of the camera."""
        pc = self.to_camera(points)
        return self.project_camera(pc)

    def project_camera(self, pc: np.ndarray) -> np.ndarray:
        """Camera-frame points (N, 3) -> sensor pixels (N, 2)."""
        z = np.maximum(pc[:, 2:3], 1e-3)
        return pc[:, :2] * (self.focal / z) + np.array([SENSOR[0] / 2, SENSOR[1] / 2])

    def road_point(self, s: float | np.ndarray, lateral: float | np.ndarray) -> np.ndarray:
        """World point(s) at distance ``s`` along the road and ``lateral`` across it: (..., 3)."""
        s = np.asarray(s, dtype=np.float64)[..., None]
        lat = np.asarray(lateral, dtype=np.float64)[..., None]
        return self.target + s * self.road_direction + lat * self.road_normal

    @property
    def camera_side(self) -> float:
        """+1 when the camera stands on the road's +normal side, -1 otherwise."""
        return 1.0 if float(np.dot(self.position - self.target, self.road_normal)) >= 0 else -1.0

    def lane_offsets(self) -> list[tuple[float, int]]:
        """(lateral offset, driving direction ±1) of each lane's centre (right-hand traffic)."""
        half = self.lanes // 2
        out = []
        for i in range(half):
            off = (i + 0.5) * LANE_WIDTH
            out.append((-off, 1))  # right of the +direction
            out.append((off, -1))
        return out

    def visible_range(self, lateral: float, margin: float = 0.12) -> tuple[float, float] | None:
        """Range of ``s`` whose road point lies well inside the frame and in front of the camera."""
        s = np.linspace(-120, 120, 481)
        pts = self.road_point(s, lateral)
        pc = self.to_camera(pts)
        uv = self.project_camera(pc)
        w, h = SENSOR
        ok = (
            (pc[:, 2] > 6.0)
            & (uv[:, 0] > margin * w)
            & (uv[:, 0] < (1 - margin) * w)
            & (uv[:, 1] > margin * h)
            & (uv[:, 1] < (1 - margin) * h)
        )
        if not ok.any():
            return None
        idx = np.flatnonzero(ok)
        return float(s[idx[0]]), float(s[idx[-1]])


def sample_camera(rng: np.random.Generator, camera_id: int, *, style: str = "real") -> CameraSpec:
    """Draw one camera. ``style='sim'`` gives the wider, cleaner settings of the simulation split."""
    sim = style == "sim"
    height = rng.uniform(2.5, 14.0) if sim else rng.uniform(4.0, 12.0)
    distance = rng.uniform(10.0, 40.0) if sim else rng.uniform(14.0, 45.0)
    fov = np.deg2rad(rng.uniform(28, 60))
    focal = SENSOR[0] / 2 / np.tan(fov / 2)
    # zoom no further than a 5 m car at the look-at point spanning 22% of the frame width, so
    # the nearest, largest vehicles (buses, trucks) still fit in the frame
    focal = min(focal, 0.22 * SENSOR[0] * float(np.hypot(distance, height)) / 5.0)
    overcast = rng.random() < 0.35
    dusk = (not sim) and rng.random() < 0.1
    warm = rng.uniform(-1, 1)
    tint = rng.uniform(-0.04, 0.04)
    cast = (1 + 0.10 * warm, 1 + tint, 1 - 0.12 * warm)
    return CameraSpec(
        camera_id=camera_id,
        height=float(height),
        distance=float(distance),
        road_angle=float(rng.uniform(0, np.pi)),
        focal=float(focal),
        roll=float(rng.normal(0, 0.03)),
        lanes=int(rng.choice([2, 4, 4, 6])),
        light_azimuth=float(rng.uniform(0, 2 * np.pi)),
        light_elevation=float(rng.uniform(0.35, 1.2)),
        ambient=float(rng.uniform(0.72, 0.85) if overcast else rng.uniform(0.5, 0.65)),
        diffuse=float(rng.uniform(0.15, 0.3) if overcast else rng.uniform(0.35, 0.6)),
        gain=float(rng.uniform(0.65, 0.8) if dusk else rng.uniform(0.85, 1.2)),
        cast=tuple(float(c) for c in cast),
        saturation=float(rng.uniform(0.55, 1.15)),
        gamma=float(rng.uniform(0.85, 1.2)),
        blur=float(rng.uniform(0.0, 0.6) if sim else rng.uniform(0.0, 1.4)),
        noise=float(rng.uniform(0.5, 3.0) if sim else rng.uniform(1.5, 7.0)),
        jpeg_quality=int(rng.integers(80, 96) if sim else rng.integers(45, 92)),
        resolution=float(rng.uniform(0.8, 1.0) if sim else rng.uniform(0.45, 1.0)),
        scene_seed=int(rng.integers(2**31)),
    )
