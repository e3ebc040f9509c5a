"""``vreid extract``: feature files of dataset splits, or of a plain folder of images.

Re-id checkpoints give ``DIR/<split>.npy`` + ``DIR/<split>.names.txt``; an attribute model gives
``DIR/{color,type}/<split>.npy`` head features and ``DIR/{color,type}_probs/<split>.npy``
probabilities. A folder holding image files directly is one split, ``images``, whose names are the
images' paths relative to the folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vreid.core.artefacts import refuse_overwrite
from vreid.core.config import Config
from vreid.core.errors import DatasetError
from vreid.data import load_from_config
from vreid.data.files import is_image_name
from vreid.data.image_datasets import image_paths
from vreid.data.records import ImageRecord
from vreid.inference.attributes import extract_attribute_features
from vreid.inference.extract import Extractor, extract_split


def extraction_jobs(
    config: Config, data_root: str | os.PathLike[str], splits: Sequence[str]
) -> dict[str, list[ImageRecord]]:
    """``{split: records}`` to extract: the dataset's ``splits`` (read with the ``data`` settings),
    or ``{"images": …}`` when ``data_root`` holds image files directly."""
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    if any(is_image_name(p.name) for p in root.iterdir() if p.is_file()):
        return {
            "images": [
                ImageRecord(path=p, name=p.relative_to(root).as_posix(), split="images")
                for p in image_paths(root)
            ]
        }
    dataset = load_from_config(config.data, root=root)
    missing = [s for s in splits if not dataset.splits.get(s)]
    if missing:
        have = ", ".join(s for s, r in dataset.splits.items() if r) or "none"
        raise DatasetError(
            f"{root}: no {', '.join(missing)} split (splits with images: {have}); "
            "choose others with --splits"
        )
    return {s: dataset.splits[s] for s in splits}


def extract_to(
    config: Config,
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    splits: Sequence[str] = ("query", "gallery"),
    attributes: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, list[Path]]:
    """Write the features of ``checkpoint`` for ``splits`` of ``data_root`` into ``out``; returns
    ``{split: files written}``. Device, batch size, flip and workers come from ``config``
    (``runtime.device``, ``train.batch_size_eval``, ``train.eval_flip``, ``train.num_workers``)."""
    out = Path(out)
    jobs = extraction_jobs(config, data_root, splits)
    tc = config.train
    written: dict[str, list[Path]] = {}
    if attributes:
        for split, records in jobs.items():
            files = extract_attribute_features(
                checkpoint,
                records,
                out,
                split,
                device=config.runtime.device,
                batch_size=tc.batch_size_eval,
                num_workers=tc.num_workers,
                progress=progress,
                overwrite=overwrite,
            )
            written[split] = list(files.values())
        return written
    for split in jobs:
        refuse_overwrite(out / f"{split}.npy", overwrite=overwrite)
    extractor = Extractor(
        checkpoint,
        device=config.runtime.device,
        batch_size=tc.batch_size_eval,
        flip=tc.eval_flip,
        num_workers=tc.num_workers,
        progress=progress,
    )
    for split, records in jobs.items():
        written[split] = [extract_split(extractor, records, out / split)]
    return written
