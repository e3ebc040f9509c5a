"""Search a folder of images for the vehicles of some query images: ``vreid search``.

For images that are not a dataset — a camera's new frames, a folder of crops someone sent — with
the models of ``vreid train`` checkpoints: optional detector cropping (the paper's pre-processing),
features of each model (and, with an attribute model, colour/type features as metadata), then the
retrieval chain of ``vreid rank`` and ``vreid pipeline`` (``vreid.retrieval.chain``: metadata-aware
k-reciprocal re-ranking per model, the weighted ensemble; no tracks in a folder), and the nearest
gallery images of each query. Every setting comes from a :class:`~vreid.core.config.Config`.

Writes into a new run directory (an existing non-empty one is never reused: ``DIR-2`` … instead):

* ``ranking.csv`` — ``query,rank,gallery,distance`` for the ``retrieval.top`` nearest images of
  each query (paths relative to the query/gallery folder);
* ``distances.npy`` — the chain's final (q, g) float32 distance matrix, rows and columns in the
  order of ``query.txt`` / ``gallery.txt``;
* ``ranklists.png`` — each query (blue) and its nearest images, for a look by eye, each captioned
  with its rank, camera (when the name says it), distance and name; frames are green/red when the
  names carry vehicle ids (the VeRi form ``VVVV_cCCC_…``), grey otherwise;
* ``search.json`` — the settings (the chain's row and steps, the ``retrieval`` section),
  checkpoints, what each model was trained on, the crop counts and the image counts.

With ``crop.enabled`` the crops go to ``crops/query`` and ``crops/gallery``; an image in which the
detector finds no vehicle is kept whole. :attr:`SearchResult.crops` counts both, and
:func:`crop_warning` says when most images stayed whole (the detector found nothing: wrong
weights, or ``crop.min_score`` too high).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import (
    atomic_path,
    made_or_removed,
    new_run_dir,
    text_bytes,
    write_json_atomic,
    write_names_atomic,
    write_npy_atomic,
)
from vreid.core.config import Config
from vreid.core.devices import resolve_device
from vreid.core.errors import DatasetError
from vreid.data.files import IMAGE_SUFFIXES
from vreid.data.image_datasets import image_paths
from vreid.data.records import ImageRecord
from vreid.data.veri import veri_name_labels
from vreid.inference.attributes import attribute_features
from vreid.inference.crop import CropReport, crop_folder, crop_settings
from vreid.inference.extract import Extractor
from vreid.retrieval.chain import RetrievalChain, member_names
from vreid.retrieval.submission import top_indices
from vreid.workflows.report.ranklist import draw_rank_list


@dataclass
class SearchResult:
    """What :func:`search_images` produced."""

    out_dir: Path
    queries: list[Path]
    gallery: list[Path]
    distances: np.ndarray
    """(q, g) float32 distances, smaller is more similar."""
    ranking: np.ndarray
    """(q, top) gallery indices, nearest first."""
    models: list[dict[str, Any]]
    """Per checkpoint: ``label`` (its run folder and architecture, as the progress bars name
    it), ``checkpoint`` and ``trained_on`` (:attr:`vreid.Extractor.trained_on`)."""
    crops: dict[str, dict[str, int]] | None = None
    """With ``crop.enabled``: per side (``query``, ``gallery``) ``images``, ``cropped`` and
    ``whole`` (no vehicle found, kept whole); ``None`` without cropping."""


def crop_warning(crops: dict[str, dict[str, int]] | None) -> str | None:
    """A warning when more than half of the query or gallery images were kept whole by the
    detector (``None`` otherwise): the search then ran on whole images, not on vehicles."""
    if not crops:
        return None
    bad = [side for side, c in crops.items() if c["images"] and 2 * c["whole"] > c["images"]]
    if not bad:
        return None
    counts = " and ".join(f"{crops[s]['whole']} of {crops[s]['images']} {s}" for s in bad)
    return (
        f"the detector found no vehicle in {counts} images, which were searched whole; check "
        "the detector weights (--detector-weights) or lower crop.min_score (--min-score)"
    )


def _run_folder(checkpoint: str | os.PathLike[str]) -> str:
    path = Path(checkpoint).resolve()
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder.name or path.stem


def model_label(
    checkpoint: str | os.PathLike[str], arch: dict[str, Any], *, with_file: bool = False
) -> str:
    """How a search names a model: its run folder (the folder above ``checkpoints/``, else the
    checkpoint's folder) and architecture, e.g. ``"demo (glamor)"``; ``with_file`` adds the file
    name (``"demo/model.pt (glamor)"``), for checkpoints of the same run."""
    where = _run_folder(checkpoint)
    if with_file:
        where += f"/{Path(checkpoint).name}"
    return f"{where} ({arch.get('name', '?')})"


def _images_of(source: Path, what: str) -> tuple[Path, list[Path]]:
    """``(root, images)``: a folder's images (recursively) or a single image file."""

    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{source}: the {what} is not an image ({', '.join(IMAGE_SUFFIXES)})"
            )
        return source.parent, [source]
    if not source.is_dir():
        raise DatasetError(f"{source}: the {what} is neither an image file nor a folder")
    images = image_paths(source)
    if not images:
        raise DatasetError(f"{source}: no images (.jpg, .png, …) in the {what} folder")
    return source, images


def _cropped(
    root: Path, images: list[Path], dst: Path, config: Config, device: str, progress: bool
) -> tuple[list[Path], CropReport]:
    """Crop ``images`` (under ``root``) into ``dst`` with the detector of ``config.crop``; the
    crops' paths and the crop report."""

    src = root
    if len(images) == 1 and images[0].parent == root and len(list(root.iterdir())) > 1:
        # one file of a larger folder: crop just that file
        src = dst.with_name(dst.name + "_input")
        src.mkdir(parents=True)
        shutil.copy2(images[0], src / images[0].name)
        images = [src / images[0].name]
    report = crop_folder(
        src,
        dst,
        **crop_settings(config.crop),
        device=device,
        progress=progress,
    )
    return [dst / p.relative_to(src) for p in images], report


def _named_records(paths: Sequence[Path], names: Sequence[str], split: str) -> list[ImageRecord]:
    """Records of ``paths`` with the vehicle id and camera their names carry (VeRi form)."""
    records = []
    for path, name in zip(paths, names, strict=True):
        vehicle_id, camera = veri_name_labels(name)
        records.append(ImageRecord(path, name, split, vehicle_id=vehicle_id, camera=camera))
    return records


def search_images(
    checkpoints: Sequence[str | os.PathLike[str]],
    query: str | os.PathLike[str],
    gallery: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: Config | None = None,
    attribute_checkpoint: str | os.PathLike[str] | None = None,
    max_pictures: int = 20,
    progress: bool = True,
) -> SearchResult:
    """Rank the images of ``gallery`` (a folder) for each image of ``query`` (a folder or one image
    file) with the models of ``checkpoints`` (several are ensembled, in the order of
    ``retrieval.ensemble_weights``) through the retrieval chain of ``vreid rank`` and ``vreid
    pipeline`` (:class:`vreid.retrieval.chain.RetrievalChain`; folders have no tracks).

    Settings come from ``config`` (default: the defaults): ``retrieval`` (``rerank``, ``k1``,
    ``k2``, ``lambda_value``, ``gamma_type``, ``gamma_colour``, ``ensemble_weights``, ``top``:
    images listed per query), ``runtime.device``, ``train.batch_size_eval`` / ``eval_flip`` /
    ``num_workers`` (feature extraction) and ``crop``: with ``crop.enabled`` both sides are
    cropped with the detector first (``crop.weights``: a ``vreid train-detector`` checkpoint or
    torchvision COCO file; ``None``: the COCO weights in torchvision's cache).
    ``attribute_checkpoint``: an attribute model (``vreid train-attributes``'
    ``checkpoints/attributes.pt``) whose colour/type features are the metadata of the chain.
    ``max_pictures``: queries drawn in ``ranklists.png``. See the module docstring for what is
    written into the run directory.
    """

    cfg = config or Config()
    rc = cfg.retrieval
    if not checkpoints:
        raise DatasetError("search needs at least one checkpoint of `vreid train`")
    names = member_names(checkpoints, what="a checkpoint", stem=True)
    device = str(resolve_device(cfg.runtime.device, setting="runtime.device"))
    q_root, q_paths = _images_of(Path(query), "query")
    g_root, g_paths = _images_of(Path(gallery), "gallery")
    out_path = Path(out)
    run = new_run_dir(out_path.parent, out_path.name)
    with made_or_removed(run):
        q_names = [p.relative_to(q_root).as_posix() for p in q_paths]
        g_names = [p.relative_to(g_root).as_posix() for p in g_paths]
        q_used, g_used = q_paths, g_paths
        crops: dict[str, dict[str, int]] | None = None
        if cfg.crop.enabled:
            q_used, q_rep = _cropped(
                q_root, q_paths, run / "crops" / "query", cfg, device, progress
            )
            g_used, g_rep = _cropped(
                g_root, g_paths, run / "crops" / "gallery", cfg, device, progress
            )
            crops = {
                side: {"images": rep.images, "cropped": rep.cropped, "whole": len(rep.uncropped)}
                for side, rep in (("query", q_rep), ("gallery", g_rep))
            }

        features = {}
        models = []
        folders = [_run_folder(c) for c in checkpoints]
        same_run = len(set(folders)) < len(folders)
        for name, ckpt in zip(names, checkpoints, strict=True):
            extract = Extractor(
                ckpt,
                device=device,
                batch_size=cfg.train.batch_size_eval,
                flip=cfg.train.eval_flip,
                num_workers=cfg.train.num_workers,
                progress=progress,
            )
            label = model_label(ckpt, extract.arch, with_file=same_run)
            models.append(
                {"label": label, "checkpoint": str(ckpt), "trained_on": extract.trained_on}
            )
            qf = extract(q_used, description=f"query features {label}").numpy()
            gf = extract(g_used, description=f"gallery features {label}").numpy()
            features[name] = (qf, gf)
        attributes = None
        if attribute_checkpoint is not None and (rc.gamma_type > 0 or rc.gamma_colour > 0):
            sides = []
            for split, paths, used in (("query", q_names, q_used), ("gallery", g_names, g_used)):
                records = [ImageRecord(p, n, split) for p, n in zip(used, paths, strict=True)]
                sides.append(
                    attribute_features(
                        attribute_checkpoint,
                        records,
                        device=device,
                        batch_size=cfg.train.batch_size_eval,
                        num_workers=cfg.train.num_workers,
                        progress=progress,
                    )
                )
            attributes = {head: (sides[0][head], sides[1][head]) for head in ("type", "color")}
        chain = RetrievalChain(
            rc, features, attributes=attributes, device=device, progress=progress
        )
        distances = chain.final_distances()
        ranking = top_indices(distances, rc.top)
        top = ranking.shape[1]

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["query", "rank", "gallery", "distance"])
        for qi, row in enumerate(ranking):
            for rank, gi in enumerate(row.tolist(), start=1):
                writer.writerow([q_names[qi], rank, g_names[gi], f"{distances[qi, gi]:.6f}"])
        ranking_csv = text_bytes(buf.getvalue())  # file names keep their bytes (surrogateescape)
        with atomic_path(run / "ranking.csv") as tmp:
            tmp.write_bytes(ranking_csv)
        write_names_atomic(run / "query.txt", q_names)
        write_names_atomic(run / "gallery.txt", g_names)
        write_npy_atomic(run / "distances.npy", distances)
        shown = list(range(min(max_pictures, len(q_paths))))
        if shown:
            draw_rank_list(
                distances,
                shown,
                _named_records(q_used, q_names, "query"),
                _named_records(g_used, g_names, "gallery"),
                run / "ranklists.png",
                top=min(top, 10),
                show_distance=True,
                show_name=True,
            )
        settings: dict[str, Any] = {
            "checkpoints": [str(Path(c).resolve()) for c in checkpoints],
            "attribute_checkpoint": (
                str(Path(attribute_checkpoint).resolve())
                if attribute_checkpoint is not None
                else None
            ),
            "query": str(Path(query).resolve()),
            "gallery": str(Path(gallery).resolve()),
            "queries": len(q_paths),
            "gallery_images": len(g_paths),
            "top": top,
            "row": chain.final,
            "steps": chain.steps,
            "retrieval": rc.model_dump(mode="json"),
            "models": models,
            "crop": cfg.crop.model_dump(mode="json") if cfg.crop.enabled else None,
            "crop_counts": crops,
            "flip": cfg.train.eval_flip,
            "device": device,
        }
        write_json_atomic(run / "search.json", settings)
        return SearchResult(run, q_paths, g_paths, distances, ranking, models, crops)
