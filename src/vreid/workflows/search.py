"""Search a folder of images for the vehicles of some query images: ``vreid search``.

For images that are not a dataset — a camera's new frames, a folder of crops someone sent — with
the models of ``vreid train`` checkpoints: optional detector cropping (the paper's pre-processing),
features of each model, k-reciprocal re-ranking per model, the models' distances averaged (the
paper's ensemble), and the nearest gallery images of each query.

Writes into a new run directory (an existing non-empty one is never reused: ``DIR-2`` … instead):

* ``ranking.csv`` — ``query,rank,gallery,distance`` for the ``top`` nearest images of each query
  (paths relative to the query/gallery folder);
* ``distances.npy`` — the full (q, g) float32 distance matrix, rows and columns in the order of
  ``query.txt`` / ``gallery.txt``;
* ``ranklists.png`` — each query (blue) and its nearest images, for a look by eye;
* ``search.json`` — the settings, checkpoints and counts that made them.
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

from vreid.core.artefacts import new_run_dir, write_json_atomic, write_npy_atomic, write_text_atomic
from vreid.core.errors import DatasetError
from vreid.data.records import ImageRecord


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


def _images_of(source: Path, what: str) -> tuple[Path, list[Path]]:
    """``(root, images)``: a folder's images (recursively) or a single image file."""
    from vreid.data.files import IMAGE_SUFFIXES
    from vreid.data.image_datasets import image_paths

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
    root: Path, images: list[Path], dst: Path, weights: Path | None, device: str, progress: bool
) -> list[Path]:
    """Crop ``images`` (under ``root``) into ``dst`` with the detector; the crops' paths."""
    from vreid.inference.crop import crop_folder

    src = root
    if len(images) == 1 and images[0].parent == root and len(list(root.iterdir())) > 1:
        # one file of a larger folder: crop just that file
        src = dst.with_name(dst.name + "_input")
        src.mkdir(parents=True)
        shutil.copy2(images[0], src / images[0].name)
        images = [src / images[0].name]
    crop_folder(src, dst, weights=weights, device=device, progress=progress)
    return [dst / p.relative_to(src) for p in images]


def search_images(
    checkpoints: Sequence[str | os.PathLike[str]],
    query: str | os.PathLike[str],
    gallery: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    top: int = 10,
    rerank: bool = True,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    crop: bool = False,
    detector_weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    flip: bool = False,
    max_pictures: int = 20,
    progress: bool = True,
) -> SearchResult:
    """Rank the images of ``gallery`` (a folder) for each image of ``query`` (a folder or one image
    file) with the models of ``checkpoints`` (several are ensembled: their distances averaged).

    ``rerank``: k-reciprocal re-ranking (``k1``, ``k2``, ``lambda_value``) per model, else plain
    Euclidean distances of the L2-normalised features. ``crop``: crop both sides with a detector
    first (``detector_weights``: a ``vreid train-detector`` checkpoint or torchvision COCO file;
    ``None``: the COCO weights in torchvision's cache). ``max_pictures``: queries drawn in
    ``ranklists.png``. See the module docstring for what is written into the run directory.
    """
    from vreid.inference.extract import Extractor
    from vreid.retrieval.distance import ensemble, pairwise_distances
    from vreid.retrieval.reranking import rerank as rerank_fn
    from vreid.workflows.report.ranklist import draw_rank_list

    if not checkpoints:
        raise DatasetError("search needs at least one checkpoint of `vreid train`")
    if top < 1:
        raise ValueError(f"top={top}: must be ≥ 1")
    q_root, q_paths = _images_of(Path(query), "query")
    g_root, g_paths = _images_of(Path(gallery), "gallery")
    out_path = Path(out)
    run = new_run_dir(out_path.parent, out_path.name)
    q_names = [p.relative_to(q_root).as_posix() for p in q_paths]
    g_names = [p.relative_to(g_root).as_posix() for p in g_paths]
    q_used, g_used = q_paths, g_paths
    if crop:
        weights = Path(detector_weights) if detector_weights is not None else None
        q_used = _cropped(q_root, q_paths, run / "crops" / "query", weights, device, progress)
        g_used = _cropped(g_root, g_paths, run / "crops" / "gallery", weights, device, progress)

    distmats = []
    for ckpt in checkpoints:
        extract = Extractor(
            ckpt, device=device, batch_size=batch_size, flip=flip, progress=progress
        )
        qf = extract(q_used, description=f"query features ({Path(ckpt).name})").numpy()
        gf = extract(g_used, description=f"gallery features ({Path(ckpt).name})").numpy()
        if rerank:
            d = rerank_fn(
                qf,
                gf,
                k1=min(k1, len(q_used) + len(g_used)),
                k2=min(k2, len(q_used) + len(g_used)),
                lambda_value=lambda_value,
                device=extract.device,
            )
        else:
            d = pairwise_distances(qf, gf)
        distmats.append(np.asarray(d, dtype=np.float32))
    distances = ensemble(distmats)
    top = min(top, len(g_paths))
    ranking = np.argsort(distances, axis=1, kind="stable")[:, :top]

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["query", "rank", "gallery", "distance"])
    for qi, row in enumerate(ranking):
        for rank, gi in enumerate(row.tolist(), start=1):
            writer.writerow([q_names[qi], rank, g_names[gi], f"{distances[qi, gi]:.6f}"])
    write_text_atomic(run / "ranking.csv", buf.getvalue())
    write_text_atomic(run / "query.txt", "".join(f"{n}\n" for n in q_names))
    write_text_atomic(run / "gallery.txt", "".join(f"{n}\n" for n in g_names))
    write_npy_atomic(run / "distances.npy", distances)
    shown = list(range(min(max_pictures, len(q_paths))))
    if shown:
        draw_rank_list(
            distances,
            shown,
            [ImageRecord(p, n, "query") for p, n in zip(q_used, q_names, strict=True)],
            [ImageRecord(p, n, "gallery") for p, n in zip(g_used, g_names, strict=True)],
            run / "ranklists.png",
            top=top,
            labels=[n if len(n) <= 11 else "…" + n[-10:] for n in q_names[: len(shown)]],
        )
    settings: dict[str, Any] = {
        "checkpoints": [str(Path(c).resolve()) for c in checkpoints],
        "query": str(Path(query).resolve()),
        "gallery": str(Path(gallery).resolve()),
        "queries": len(q_paths),
        "gallery_images": len(g_paths),
        "top": top,
        "rerank": {"k1": k1, "k2": k2, "lambda_value": lambda_value} if rerank else None,
        "crop": {"weights": str(detector_weights) if detector_weights else None} if crop else None,
        "flip": flip,
    }
    write_json_atomic(run / "search.json", settings)
    return SearchResult(run, q_paths, g_paths, distances, ranking)
