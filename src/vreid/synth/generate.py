"""Planning and writing a synthetic dataset: identities, cameras, tracks, splits, images, labels.

Everything random is drawn in the planning step from seeds derived from the user's seed (one
stream per camera, per identity, per track), so each image is a pure function of its
:class:`~vreid.synth.render.FrameSpec`; images are then rendered by a pool of processes in any
order, and the output is byte-identical whatever the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vreid.core.artefacts import write_text_atomic
from vreid.core.config import SynthConfig
from vreid.core.errors import ConfigError, VreidError
from vreid.core.progress import progress_bar
from vreid.data.aic import write_aic
from vreid.data.records import ImageRecord
from vreid.synth.camera import CameraSpec, sample_camera
from vreid.synth.render import FrameSpec, Renderer, save_background
from vreid.synth.vehicles import VehicleSpec, sample_vehicle

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """Size of a generated dataset."""

    real_ids: int
    """Identities in ``real/`` (train + test)."""
    test_fraction: float
    """Fraction of the real identities that go to the test split (query + gallery)."""
    sim_ids: int
    """Identities in ``simulation/`` (disjoint from the real ones)."""
    cameras: int
    """Cameras of ``real/``."""
    sim_cameras: int
    """Cameras of ``simulation/``."""
    cams_per_id: tuple[int, int]
    """Min/max number of cameras each real identity passes (at least 2)."""
    frames: tuple[int, int]
    """Min/max frames per track."""
    sim_cams_per_id: tuple[int, int] = (2, 4)
    sim_frames: tuple[int, int] = (3, 5)
    query_tracks: tuple[int, int] = (1, 2)
    """Min/max query tracks per test identity (one query image from each)."""


PRESETS: dict[str, Preset] = {
    "tiny": Preset(12, 0.34, 6, 4, 3, (2, 3), (2, 3), (2, 2), (2, 2), (1, 1)),
    "demo": Preset(170, 0.3, 100, 8, 6, (2, 5), (3, 7), (2, 4), (3, 4), (1, 2)),
    "aic20-scale": Preset(666, 0.5, 500, 36, 30, (3, 7), (6, 18), (3, 5), (4, 6), (1, 3)),
}

# Hard cases (fractions of tracks / frames)
LOOSE_TRACKS = 0.15
"""Tracks cropped with loose random margins (25-60% of the box per side)."""
TRUNCATED_FRAMES = 0.07
"""Frames whose crop window cuts 10-35% of the vehicle off."""
TURNING_TRACKS = 0.15
"""Tracks whose heading swings by 9-29 degrees (lane changes and turns)."""
OCCLUDED_TRACKS = 0.12
"""Tracks with another vehicle (from a pool of distractors) passing in a neighbouring lane."""


@dataclass(frozen=True)
class Task:
    """One image to render and write."""

    index: int
    frame: FrameSpec
    path: str
    quality: int


@dataclass
class _Track:
    vehicle: int  # index into the vehicle list
    camera: int  # index into the camera list
    frames: list[FrameSpec]


# ------------------------------------------------------------------------------------------
# planning


def _resolve_preset(
    preset: str, ids: int | None, cameras: int | None
) -> tuple[Preset, int, int, int]:
    if preset not in PRESETS:
        raise ConfigError(f"synth preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    n_ids = p.real_ids if ids is None else int(ids)
    n_cams = p.cameras if cameras is None else int(cameras)
    if n_ids < 4:
        raise ConfigError(f"synth ids={n_ids}: need at least 4 identities (2 train, 2 test)")
    if n_cams < 2:
        raise ConfigError(f"synth cameras={n_cams}: need at least 2 cameras")
    n_test = int(np.clip(round(n_ids * p.test_fraction), 2, n_ids - 2))
    return p, n_ids, n_test, n_cams


def _visible_lanes(cam: CameraSpec) -> list[tuple[float, int, tuple[float, float]]]:
    """(lateral offset, direction, visible range of s) of each lane the camera sees."""
    lanes = [(lat, d, cam.visible_range(lat)) for lat, d in cam.lane_offsets()]
    return [(lat, d, vis) for lat, d, vis in lanes if vis is not None]


def _plan_track(
    rng: np.random.Generator,
    cam: CameraSpec,
    lanes: list[tuple[float, int, tuple[float, float]]],
    vehicle: int,
    camera: int,
    n_frames: int,
    distractors: Sequence[int] = (),
) -> _Track:
    choices = list(lanes)
    rng.shuffle(choices)
    # no lane visible cannot happen for sampled cameras; fall back to the look-at point
    lateral, direction, vis = choices[0] if choices else (0.0, 1, (-1.0, 1.0))
    lo, hi = vis
    travel = min(hi - lo, rng.uniform(4.0, 16.0))
    start = rng.uniform(lo, hi - travel)
    s = np.linspace(start, start + travel, n_frames)
    if direction < 0:
        s = s[::-1]
    s = s + rng.normal(0, 0.15, n_frames)
    heading0 = cam.road_angle + (0.0 if direction > 0 else np.pi)
    drift = rng.normal(0, 0.04)
    ramp = np.linspace(-1, 1, n_frames)
    yaw = heading0 + drift * ramp + rng.normal(0, 0.01, n_frames)
    lat = lateral + rng.normal(0, 0.15) + rng.normal(0, 0.05, n_frames)
    if rng.random() < TURNING_TRACKS:  # a lane change or turn: the pose swings across the track
        turn = rng.uniform(0.15, 0.5) * rng.choice([-1, 1])
        yaw = yaw + turn * (ramp + 1) / 2
        lat = lat + direction * turn * 2.0 * (ramp + 1) / 2
    loose = rng.random() < LOOSE_TRACKS
    base_margin = rng.uniform(0.25, 0.6) if loose else rng.uniform(0.02, 0.12)
    spread = 0.15 if loose else 0.03
    exposure = rng.uniform(0.95, 1.05)
    occluders: list[tuple[int, float, float, float] | None] = [None] * n_frames
    if distractors and rng.random() < OCCLUDED_TRACKS:
        other = int(distractors[int(rng.integers(len(distractors)))])
        lat_o = lateral + cam.camera_side * 3.5  # the next lane towards the camera
        if abs(lat_o) > cam.road_half_width:
            lat_o = lateral - cam.camera_side * 3.5
        head_o = cam.road_angle + (0.0 if lat_o < 0 else np.pi)
        gap = rng.uniform(2.0, 6.0) * rng.choice([-1, 1])
        rel = rng.uniform(-1.5, 1.5)
        occluders = [
            (other, float(s[k] + gap + rel * k), float(lat_o), float(head_o))
            for k in range(n_frames)
        ]
    frames = []
    for k in range(n_frames):
        trunc = (0.0, 0.0)
        if rng.random() < TRUNCATED_FRAMES:
            amount = float(rng.uniform(0.1, 0.35) * rng.choice([-1, 1]))
            trunc = (amount, 0.0) if rng.random() < 0.75 else (0.0, amount)
        frames.append(
            FrameSpec(
                vehicle=vehicle,
                camera=camera,
                s=float(s[k]),
                lateral=float(lat[k]),
                heading=float(yaw[k]),
                margin=float(max(0.0, base_margin + rng.normal(0, 0.02))),
                offset=(float(rng.uniform(-spread, spread)), float(rng.uniform(-spread, spread))),
                truncate=trunc,
                brightness=float(exposure * rng.uniform(0.97, 1.03)),
                seed=int(rng.integers(2**63)),
                occluder=occluders[k],
            )
        )
    return _Track(vehicle, camera, frames)


def _plan_identity_tracks(
    seed: int,
    stream: int,
    vehicle_index: int,
    vehicle_id: int,
    cams: Sequence[int],
    cameras: Sequence[CameraSpec],
    lanes: Sequence[list[tuple[float, int, tuple[float, float]]]],
    cams_per_id: tuple[int, int],
    frames: tuple[int, int],
    distractors: Sequence[int] = (),
) -> list[_Track]:
    rng = np.random.default_rng([seed, stream, vehicle_id])
    n = int(rng.integers(cams_per_id[0], cams_per_id[1] + 1))
    n = int(np.clip(n, 2, len(cams)))
    chosen = sorted(rng.choice(len(cams), size=n, replace=False).tolist())
    out = []
    for c in chosen:
        ci = cams[c]
        nf = int(rng.integers(frames[0], frames[1] + 1))
        out.append(_plan_track(rng, cameras[ci], lanes[ci], vehicle_index, ci, nf, distractors))
    return out


@dataclass
class Plan:
    """The whole dataset before rendering."""

    vehicles: list[VehicleSpec]
    cameras: list[CameraSpec]
    tasks: list[Task]
    real: dict[str, list[ImageRecord]]
    sim: dict[str, list[ImageRecord]]
    sim_extras: dict[str, dict[str, str]]
    info: dict


def plan_dataset(
    root: Path,
    *,
    preset: str = "demo",
    ids: int | None = None,
    cameras: int | None = None,
    seed: int = 0,
) -> Plan:
    """Draw every identity, camera, track and frame, and the split records (nothing rendered)."""
    p, n_ids, n_test, n_cams = _resolve_preset(preset, ids, cameras)
    n_train = n_ids - n_test
    n_sim = max(2, round(p.sim_ids * n_ids / p.real_ids)) if ids is not None else p.sim_ids
    n_sim_cams = p.sim_cameras

    cams = [sample_camera(np.random.default_rng([seed, 1, c]), c + 1) for c in range(n_cams)]
    sim_cams = [
        sample_camera(np.random.default_rng([seed, 2, c]), c + 1, style="sim")
        for c in range(n_sim_cams)
    ]
    cameras_all = cams + sim_cams
    real_cam_idx = list(range(n_cams))
    sim_cam_idx = list(range(n_cams, n_cams + n_sim_cams))

    # identity numbers: real train 1..n_train, real test next, simulation after them
    # distractors (never labelled) only appear as other traffic that hides part of a vehicle
    n_distractors = max(6, (n_ids + n_sim) // 10)
    vehicles = [
        sample_vehicle(np.random.default_rng([seed, 3, vid]), vid)
        for vid in range(1, n_ids + n_sim + n_distractors + 1)
    ]
    distractors = list(range(n_ids + n_sim, len(vehicles)))
    lanes = [_visible_lanes(c) for c in cameras_all]
    tracks_by_vehicle = []
    for i, v in enumerate(vehicles[: n_ids + n_sim]):
        real = i < n_ids
        tracks_by_vehicle.append(
            _plan_identity_tracks(
                seed,
                4 if real else 5,
                i,
                v.vehicle_id,
                real_cam_idx if real else sim_cam_idx,
                cameras_all,
                lanes,
                p.cams_per_id if real else p.sim_cams_per_id,
                p.frames if real else p.sim_frames,
                distractors,
            )
        )

    rng = np.random.default_rng([seed, 6])
    # --- real train: every frame of every track of the train identities
    train_items: list[tuple[int, FrameSpec]] = []  # (track number, frame)
    train_tracks = [t for i in range(n_train) for t in tracks_by_vehicle[i]]
    for ti, t in enumerate(train_tracks):
        train_items += [(ti, f) for f in t.frames]
    # --- real test: query tracks give one image each; the other tracks form the gallery
    query_items: list[FrameSpec] = []
    gallery_tracks: list[_Track] = []
    for i in range(n_train, n_ids):
        tracks = tracks_by_vehicle[i]
        qrng = np.random.default_rng([seed, 7, vehicles[i].vehicle_id])
        nq = int(qrng.integers(p.query_tracks[0], p.query_tracks[1] + 1))
        nq = int(np.clip(nq, 1, len(tracks) - 1))
        q_idx = set(qrng.choice(len(tracks), size=nq, replace=False).tolist())
        for k, t in enumerate(tracks):
            if k in q_idx:
                query_items.append(t.frames[int(qrng.integers(len(t.frames)))])
            else:
                gallery_tracks.append(t)
    gallery_items = [(ti, f) for ti, t in enumerate(gallery_tracks) for f in t.frames]
    # --- simulation
    sim_items = [
        (ti, f)
        for ti, t in enumerate(t for i in range(n_ids, n_ids + n_sim) for t in tracks_by_vehicle[i])
        for f in t.frames
    ]

    tasks: list[Task] = []
    real: dict[str, list[ImageRecord]] = {}
    sim: dict[str, list[ImageRecord]] = {}
    sim_extras: dict[str, dict[str, str]] = {}

    def add_split(
        split: str, folder: Path, items: list[tuple[int | None, FrameSpec]], names: Callable
    ) -> list[ImageRecord]:
        order = rng.permutation(len(items)) if split != "sim" else np.arange(len(items))
        records = []
        for n, j in enumerate(order.tolist()):
            track, frame = items[j]
            name = names(n, frame)
            v = vehicles[frame.vehicle]
            cam = cameras_all[frame.camera]
            real_split = "train" if split == "sim" else split
            records.append(
                ImageRecord(
                    path=folder / name,
                    name=name,
                    split=real_split,
                    vehicle_id=v.vehicle_id,
                    camera=cam.camera_id,
                    track=track,
                    color=v.color_id if split == "sim" else None,
                    type=v.type_id if split == "sim" else None,
                )
            )
            tasks.append(Task(len(tasks), frame, str(folder / name), cam.jpeg_quality))
            if split == "sim":
                sim_extras[name] = _sim_attributes(cam, frame)
        return records

    def aic_name(n: int, frame: FrameSpec) -> str:
        return f"{n + 1:06d}.jpg"

    real_root, sim_root = root / "real", root / "simulation"
    real["train"] = add_split("train", real_root / "image_train", train_items, aic_name)
    real["query"] = add_split(
        "query", real_root / "image_query", [(None, f) for f in query_items], aic_name
    )
    real["gallery"] = add_split("gallery", real_root / "image_test", gallery_items, aic_name)
    # gallery track numbers must follow the order of the track file: they already index tracks

    def sim_name(n: int, frame: FrameSpec) -> str:
        v = vehicles[frame.vehicle]
        return f"{v.vehicle_id:05d}_c{cameras_all[frame.camera].camera_id:03d}_{n + 1}.jpg"

    sim["train"] = add_split("sim", sim_root / "image_train", sim_items, sim_name)

    info = dict(
        format_version=FORMAT_VERSION,
        preset=preset,
        seed=seed,
        ids=n_ids,
        train_ids=n_train,
        test_ids=n_test,
        sim_ids=n_sim,
        cameras=n_cams,
        sim_cameras=n_sim_cams,
        images={
            "train": len(real["train"]),
            "query": len(real["query"]),
            "gallery": len(real["gallery"]),
            "simulation": len(sim["train"]),
        },
    )
    return Plan(vehicles, cameras_all, tasks, real, sim, sim_extras, info)


def _sim_attributes(cam: CameraSpec, frame: FrameSpec) -> dict[str, str]:
    """VehicleX-style fields of one simulation image (see docs/readme/synth.md)."""
    pos = cam.road_point(frame.s, frame.lateral)
    view = pos - cam.position
    orientation = np.rad2deg(frame.heading - np.arctan2(view[1], view[0])) % 360.0
    light_dir = np.rad2deg(cam.light_azimuth - np.arctan2(view[1], view[0])) % 360.0
    return {
        "orientation": f"{orientation:.1f}",
        "lightInt": f"{cam.diffuse * cam.gain * frame.brightness:.3f}",
        "lightDir": f"{light_dir:.1f}",
        "camHei": f"{cam.height:.2f}",
        "camDis": f"{float(np.linalg.norm(view)):.2f}",
    }


# ------------------------------------------------------------------------------------------
# rendering (worker side)

_RENDERER: Renderer | None = None


def _init_worker(
    vehicles: list[VehicleSpec],
    cameras: list[CameraSpec],
    size: tuple[int, int],
    reference: bool = False,
    background_dir: str | None = None,
) -> None:
    global _RENDERER
    _RENDERER = Renderer(
        vehicles, cameras, size, reference=reference, background_dir=background_dir
    )


def _save_background(job: tuple[CameraSpec, int, str]) -> float:
    start = time.process_time()
    save_background(*job)
    return time.process_time() - start


def _render_chunk(
    chunk: list[Task],
) -> tuple[list[tuple[int, tuple[float, float, float, float]]], float]:
    """Render and write a chunk; returns ([(task index, box)], CPU seconds used)."""
    assert _RENDERER is not None
    start = time.process_time()
    out = []
    for task in chunk:
        result = _RENDERER.render(task.frame)
        buf = io.BytesIO()
        result.image.save(buf, "JPEG", quality=task.quality)
        with open(task.path, "wb") as fh:
            fh.write(buf.getvalue())
        out.append((task.index, result.box))
    return out, time.process_time() - start


def _chunks(tasks: list[Task], size: int) -> Iterator[list[Task]]:
    """Chunks of tasks sorted by camera (workers keep a few cameras' backgrounds cached)."""
    ordered = sorted(tasks, key=lambda t: (t.frame.camera, t.index))
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]


def render_tasks(
    plan: Plan,
    size: tuple[int, int],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    reference: bool = False,
    stats: dict[str, float] | None = None,
) -> np.ndarray:
    """Render and write every task's image; returns the true boxes, (n_tasks, 4) float64.

    With several workers, each camera's background is rendered once into a temporary folder
    that the workers share. ``reference=True`` uses the renderer's straightforward path (speed
    benchmark only); ``stats`` receives ``render_cpu_seconds`` (CPU time of all processes).
    """
    boxes = np.zeros((len(plan.tasks), 4))
    for folder in {os.path.dirname(t.path) for t in plan.tasks}:
        os.makedirs(folder, exist_ok=True)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
        if len(plan.tasks) < 300:
            workers = 1
    chunks = list(_chunks(plan.tasks, 32))
    cpu = 0.0

    def collect(res: list, seconds: float) -> None:
        nonlocal cpu
        for i, box in res:
            boxes[i] = box
        cpu += seconds
        if progress:
            progress(len(res))

    if workers <= 1:
        _init_worker(plan.vehicles, plan.cameras, size, reference)
        for res, seconds in map(_render_chunk, chunks):
            collect(res, seconds)
    else:
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            # workers fork from a server that has imported the renderer once
            ctx.set_forkserver_preload(["vreid.synth.generate"])
        else:
            ctx = mp.get_context("spawn")
        with tempfile.TemporaryDirectory(prefix="vreid-synth-bg-") as bg_dir:
            used = sorted({t.frame.camera for t in plan.tasks})
            initargs = (plan.vehicles, plan.cameras, size, reference, bg_dir)
            with ctx.Pool(workers, _init_worker, initargs) as pool:
                # each camera's background once, in parallel; then the images
                jobs = [(plan.cameras[c], c, bg_dir) for c in used]
                cpu += sum(pool.map(_save_background, jobs, chunksize=1))
                for res, seconds in pool.imap_unordered(_render_chunk, chunks):
                    collect(res, seconds)
    if stats is not None:
        stats["render_cpu_seconds"] = cpu
    return boxes


# ------------------------------------------------------------------------------------------
# writing


def _write_boxes(root: Path, records: dict[str, list[ImageRecord]], boxes: dict[str, np.ndarray]):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "image_name", "x1", "y1", "x2", "y2"])
    for split, recs in records.items():
        for r, b in zip(recs, boxes[split], strict=True):
            w.writerow([split, r.name, *(f"{x:.1f}" for x in b)])
    write_text_atomic(root / "vehicle_boxes.csv", buf.getvalue())


def _write_attributes(root: Path, vehicles: Sequence[VehicleSpec]) -> None:
    lines = ["vehicle_id,color_id,type_id,color,type"]
    for v in vehicles:
        lines.append(f"{v.vehicle_id},{v.color_id},{v.type_id},{v.color_name},{v.type_name}")
    write_text_atomic(root / "vehicle_attributes.csv", "\n".join(lines) + "\n")


MAX_SIZE = 2048
"""Largest image side the generator renders (a 30000×30000 request would need ~40 GiB)."""


def generate(
    out: str | os.PathLike[str],
    *,
    preset: str = "demo",
    ids: int | None = None,
    cameras: int | None = None,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate a synthetic vehicle re-id dataset under ``out`` and return ``out``.

    Writes ``out/real/`` (AIC real layout: train / query / test images, name, label and track
    files, AIC21-style ``query_label.xml`` / ``test_label.xml`` with ``vehicleID``) and
    ``out/simulation/`` (AIC simulation layout with colour, type, orientation, light and camera
    fields; identities disjoint from ``real/``), each with ``vehicle_boxes.csv`` (true boxes,
    ``split,image_name,x1,y1,x2,y2`` in pixels) and ``vehicle_attributes.csv``, plus
    ``out/synth.json`` (the settings and counts). ``size`` is (width, height) of every image.
    ``ids`` / ``cameras`` override the preset's number of real identities / cameras. The same
    arguments give byte-identical files for any ``workers``. The dataset is built in a temporary
    sibling folder and moved into place when complete; an existing non-empty ``out`` is an error
    unless ``overwrite``.
    """
    out = Path(out)
    if len(size) != 2 or min(size) < 32 or max(size) > MAX_SIZE:
        raise ConfigError(
            f"synth size={size}: need (width, height), each from 32 to {MAX_SIZE} pixels"
        )
    size = (int(size[0]), int(size[1]))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise VreidError(
                f"{out} already exists and is not empty; choose another folder or pass --overwrite"
            )
        if not (out / "synth.json").is_file():
            # --overwrite replaces what `vreid synth` made, never an arbitrary folder
            raise VreidError(
                f"{out}: --overwrite only replaces a folder made by `vreid synth` (with its "
                "synth.json); this one is not: choose another folder"
            )
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        plan = plan_dataset(tmp, preset=preset, ids=ids, cameras=cameras, seed=seed)
        boxes = _render_with_progress(plan, size, workers, progress)
        n_real = sum(len(v) for v in plan.real.values())
        real_boxes: dict[str, np.ndarray] = {}
        offset = 0
        for split in ("train", "query", "gallery"):
            real_boxes[split] = boxes[offset : offset + len(plan.real[split])]
            offset += len(plan.real[split])
        sim_boxes = {"train": boxes[n_real:]}
        real_root, sim_root = tmp / "real", tmp / "simulation"
        write_aic(real_root, plan.real)
        write_aic(sim_root, plan.sim, simulation=True, extra_attributes=plan.sim_extras)
        _write_boxes(real_root, plan.real, real_boxes)
        _write_boxes(sim_root, plan.sim, sim_boxes)
        n_ids = plan.info["ids"]
        _write_attributes(real_root, plan.vehicles[:n_ids])
        _write_attributes(sim_root, plan.vehicles[n_ids : n_ids + plan.info["sim_ids"]])
        info = dict(plan.info, size=list(size))
        write_text_atomic(tmp / "synth.json", json.dumps(info, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    return out


def _render_with_progress(
    plan: Plan, size: tuple[int, int], workers: int | None, progress: bool
) -> np.ndarray:
    if not progress:
        return render_tasks(plan, size, workers=workers)

    with progress_bar() as bar:
        job = bar.add_task("rendering", total=len(plan.tasks), info="images")
        return render_tasks(plan, size, workers=workers, progress=lambda n: bar.advance(job, n))


def generate_from_config(
    out: str | os.PathLike[str],
    synth: SynthConfig,
    *,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """:func:`generate` with the settings of the ``synth`` config section (preset, ids, cameras,
    seed, size): what ``vreid synth`` and the pipeline's data stage both run."""
    return generate(
        out,
        preset=synth.preset,
        ids=synth.ids,
        cameras=synth.cameras,
        seed=synth.seed,
        size=(int(synth.size[0]), int(synth.size[1])),
        workers=workers,
        progress=progress,
        overwrite=overwrite,
    )
