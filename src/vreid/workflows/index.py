"""A persistent gallery index: ``vreid index build``, ``vreid index add`` and ``vreid query``.

``build_index`` extracts the features of one or more re-id checkpoints (and optionally the
attribute model's colour/type features) of a folder of images or a dataset split, computes the
gallery's own top-K neighbour lists (what online k-reciprocal re-ranking needs: exact in torch, or
approximate with faiss and a recall@100 check) and writes the layout of
:mod:`vreid.retrieval.index_store`. ``add_to_index`` appends a shard and updates the lists
without recomputing the rest. :class:`Searcher` answers queries through the one retrieval chain
(:class:`vreid.retrieval.chain.RetrievalChain`) with the re-ranking of each model done online
against the standing gallery (:mod:`vreid.retrieval.online`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vreid.core.artefacts import (
    atomic_path,
    read_json,
    run_lock,
    write_json_atomic,
    write_npy_atomic,
)
from vreid.core.config import Config
from vreid.core.devices import resolve_device
from vreid.core.errors import ConfigError, DatasetError, VreidError
from vreid.core.weights import file_sha256
from vreid.data.image_datasets import image_paths
from vreid.data.loader import load_from_config
from vreid.data.records import ImageRecord
from vreid.inference.attributes import attribute_features
from vreid.inference.extract import Extractor
from vreid.retrieval.chain import ATTRIBUTE_HEADS as WEIGHTED_HEADS
from vreid.retrieval.chain import RetrievalChain
from vreid.retrieval.index_store import (
    ATTRIBUTE_HEADS,
    FORMAT,
    MANIFEST,
    VERSION,
    GalleryIndex,
    ann_file,
    generation_name,
    read_manifest,
    shard_name,
    write_manifest,
)
from vreid.retrieval.online import (
    DEFAULT_K,
    combined_neighbours,
    exact_neighbours,
    merge_neighbours,
)
from vreid.retrieval.submission import top_indices
from vreid.workflows.search import _cropped

BACKENDS = ("exact", "faiss")


# ---- sources
def _source_records(
    source: Path, config: Config, data_format: str | None, split: str
) -> list[ImageRecord]:
    """A folder of images (recursively; camera/track unknown) or a dataset's split."""
    if data_format is not None:
        dataset = load_from_config(config.data, root=source, format=data_format)
        if split not in dataset.splits or not dataset.splits[split]:
            raise DatasetError(f"{source}: the {data_format} dataset has no {split!r} images")
        return list(dataset.splits[split])
    if source.is_file():
        return [ImageRecord(source.resolve(), source.name, "gallery")]
    if not source.is_dir():
        raise DatasetError(f"{source}: neither an image file nor a folder")
    paths = image_paths(source)
    if not paths:
        raise DatasetError(f"{source}: no images (.jpg, .png, …) in the folder")
    return [ImageRecord(p.resolve(), p.relative_to(source).as_posix(), "gallery") for p in paths]


def _model_names(checkpoints: Sequence[Path]) -> list[str]:
    names = [Path(c).stem for c in checkpoints]
    if len(set(names)) != len(names):
        names = [f"{Path(c).parent.parent.name}_{Path(c).stem}" for c in checkpoints]
    if len(set(names)) != len(names):
        names = [f"model{i}" for i in range(len(checkpoints))]
    return names


# ---- neighbour lists
#: the faiss backend: 4-bit product quantisation over sub-vectors of PQ_DIMS dimensions,
#: searched with faiss's SIMD fast scan; every answer is then re-scored with exact distances on
#: the index's own features (faiss returns a shortlist, the exact pass orders it). Two
#: precisions, measured at 1M items, 512-d (docs/readme/index.md): the stored index that
#: answers queries has 4-d sub-vectors (64 bytes an item): a query's recall@100 0.963 with a
#: shortlist of 10,000; the neighbour lists are searched in a coarser one built for the build
#: (8-d, 32 bytes, half the scan): recall 0.998 of the lists with a shortlist of 160.
PQ_DIMS = 4
LIST_PQ_DIMS = 8
#: galleries smaller than this use an exact flat faiss index (PQ needs training points)
PQ_MIN_ITEMS = 1_000
#: PQ training sample
PQ_TRAIN = 65_536
#: shortlist of a query's search (re-scored exactly) and of the neighbour lists (per row)
QUERY_SHORTLIST = 10_000
LIST_SHORTLIST = 100
#: candidates L of a query's top-L search with the faiss backend (0: the full pass)
DEFAULT_CANDIDATES = 1000
#: rows' maxima beyond EXACT_ROWMAX items: the farthest item (the nearest to −x, unit-norm
#: features) among FAR_SAMPLE random items, from a shortlist of FAR_SHORTLIST
EXACT_ROWMAX = 50_000
FAR_SAMPLE = 100_000
FAR_SHORTLIST = 16


def _faiss() -> Any:
    try:
        import faiss  # optional extra: vreid[faiss]
    except ImportError:
        raise ConfigError(
            "the faiss backend needs faiss: pip install 'vreid[faiss]' (faiss-cpu)"
        ) from None
    return faiss


def ann_index(feats: np.ndarray, *, dims: int | None = None, seed: int = 0) -> Any:
    """The faiss index (L2) of ``feats`` (n, D) float32 the faiss backend searches: PQ fast
    scan (4-bit codes, ``dims`` — default :data:`PQ_DIMS` — dimensions per sub-quantiser), or
    an exact flat index under :data:`PQ_MIN_ITEMS` items. It holds codes only;
    :func:`ann_search` re-scores with the features."""
    dims = dims or PQ_DIMS
    faiss = _faiss()
    x = np.ascontiguousarray(feats, dtype=np.float32)
    n, dim = x.shape
    if n < PQ_MIN_ITEMS:
        index = faiss.IndexFlatL2(dim)
    else:
        m = max([s for s in range(1, dim // dims + 1) if dim % s == 0], default=1)
        index = faiss.IndexPQFastScan(dim, m, 4)
        rng = np.random.default_rng(seed)
        train = x if n <= PQ_TRAIN else x[np.sort(rng.choice(n, PQ_TRAIN, replace=False))]
        index.train(train)
    index.add(x)
    return index


def ann_search(
    index: Any, feats: np.ndarray, x: np.ndarray, k: int, shortlist: int, *, batch: int = 16_384
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of ``feats`` (n, D) — indexed by ``index`` — to each row of
    ``x`` (q, D): ``(d (q, k) float32 squared distances, ids (q, k) int64)``, sorted, ties by
    id; a shortlist of ``max(k, shortlist)`` from the index, re-scored exactly (``batch`` rows
    per faiss search). Slots the index cannot fill: id -1, d inf."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    s = min(max(k, shortlist), index.ntotal)
    k = min(k, s)
    d_out = np.empty((len(x), k), dtype=np.float32)
    i_out = np.empty((len(x), k), dtype=np.int64)
    step = max(1, (1 << 24) // max(1, s * x.shape[1]))  # ≤ 64 MiB of gathered features
    for a in range(0, len(x), batch):  # faiss searches in large batches
        xb = x[a : a + batch]
        _, found = index.search(xb, s)
        for b in range(0, len(found), step):
            xs = xb[b : b + step]
            # id order: ties by id after the stable sort below, and a gather in memory order
            cand = np.sort(found[b : b + step], axis=1)
            safe = np.maximum(cand, 0)
            y = np.asarray(feats[safe.reshape(-1)]).reshape(*safe.shape, -1)
            d = np.einsum("msd,msd->ms", y, y) - 2 * np.einsum("msd,md->ms", y, xs)
            d += np.einsum("md,md->m", xs, xs)[:, None]
            d = np.where(cand < 0, np.inf, np.maximum(d, 0)).astype(np.float32)
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            d_out[a + b : a + b + len(xs)] = np.take_along_axis(d, order, 1)
            i_out[a + b : a + b + len(xs)] = np.take_along_axis(cand, order, 1)
    return d_out, i_out


def _farthest(index: Any, feats: np.ndarray, x: np.ndarray, shortlist: int) -> np.ndarray:
    """(q,) float32: the largest squared distance from each row of ``x`` (q, D) to the
    ``shortlist`` items of ``feats`` that ``index`` finds nearest to −x (the farthest for
    unit-norm features)."""
    out = np.empty(len(x), dtype=np.float32)
    step = 8192  # bounds the gathered (step, shortlist, D) block
    for a in range(0, len(x), step):
        xs = x[a : a + step]
        _, ids = ann_search(index, feats, -xs, shortlist, shortlist)
        d = ((np.asarray(feats[np.maximum(ids, 0)]) - xs[:, None]) ** 2).sum(2)
        out[a : a + step] = np.where(ids < 0, -np.inf, d).max(1)
    return out


def _row_maxima(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
    """(n,) largest squared distance of each row of ``x`` to ``y`` — the farthest item is the
    nearest to −x for unit-norm features — and how it was found: exact up to
    :data:`EXACT_ROWMAX` items of ``y``; beyond, among :data:`FAR_SAMPLE` random items (a
    lower bound: the dense definition's maximum over all items is O(N²) at 10⁶)."""
    if len(y) <= EXACT_ROWMAX:
        flat = _faiss().IndexFlatIP(y.shape[1])
        flat.add(y)
        return _farthest(flat, y, x, 1), "exact"
    rng = np.random.default_rng(1)
    size = min(FAR_SAMPLE, len(y))
    sub = y[np.sort(rng.choice(len(y), size, replace=False))]
    return _farthest(ann_index(sub), sub, x, FAR_SHORTLIST), f"sample of {size}"


def compute_neighbours(
    feats: np.ndarray,
    k: int,
    *,
    backend: str = "exact",
    device: str = "cpu",
    others: np.ndarray | None = None,
    index: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-k neighbours of every row of ``feats`` among ``others`` (default: itself):
    ``(indices int32, d float32, rowmax float32, info)``; ``info`` has the backend and, for
    faiss, the recall of the lists and of a query's top 100 against exact search on a sample
    of rows. ``index``: the stored faiss index of ``others`` (:func:`ann_index`; built here
    when None), whose query recall is reported; the lists are searched in a coarser PQ index
    (:data:`LIST_PQ_DIMS`) built here and dropped."""
    x = np.ascontiguousarray(feats, dtype=np.float32)
    y = x if others is None else np.ascontiguousarray(others, dtype=np.float32)
    info: dict[str, Any] = {"backend": backend}
    if backend == "exact":
        idx, d, rowmax = exact_neighbours(x, k, others=y, device=device)
        return (
            idx.cpu().numpy().astype(np.int32),
            d.cpu().numpy(),
            rowmax.cpu().numpy(),
            info,
        )
    if backend != "faiss":
        raise ConfigError(f"unknown index backend {backend!r} (use {', '.join(BACKENDS)})")
    k = min(k, len(y))
    if index is None:
        index = ann_index(y)
    lists_index = ann_index(y, dims=LIST_PQ_DIMS)
    shortlist = max(LIST_SHORTLIST, 4 * k)
    info["index"], info["lists_index"] = _ann_kind(index), _ann_kind(lists_index)
    info["shortlist"] = {"query": QUERY_SHORTLIST, "lists": shortlist}
    d, idx = ann_search(lists_index, y, x, k, shortlist)
    del lists_index
    rowmax, info["rowmax"] = _row_maxima(x, y)
    rowmax = np.maximum(rowmax, np.where(np.isfinite(d), d, 0).max(1))
    # recall against exact search on a sample: of the lists, and of a query's top 100
    rng = np.random.default_rng(0)
    sample = rng.choice(len(x), size=min(200, len(x)), replace=False)
    kk = min(100, len(y))
    exact_idx, _, _ = exact_neighbours(x[sample], kk, others=y, device=device)
    exact_idx = exact_idx.numpy()
    info[f"lists_recall@{k}"] = recall_at(idx[sample], exact_idx[:, :k])
    _, approx = ann_search(index, y, x[sample], kk, QUERY_SHORTLIST)
    info["recall@100"] = recall_at(approx, exact_idx)
    return idx.astype(np.int32), np.where(np.isfinite(d), d, 4.0).astype(np.float32), rowmax, info


def _ann_kind(index: Any) -> str:
    """What the manifest records of a faiss index: ``flat``, or ``PQ<M>x4fs`` (M sub-quantisers
    of 4 bits, fast scan)."""
    pq = getattr(index, "M", None)
    return "flat" if pq is None else f"PQ{pq}x4fs"


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (q, k) ids that the row of ``found`` (q, ≥ k)
    holds: recall@k."""
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(found, truth, strict=True)]
    return float(np.sum(hits) / max(1, truth.size))


def top_l_search(index: Any, gallery: np.ndarray, size: int) -> Any:
    """``f(query (D,)) → (ids (L,), d (L,), largest d)``: the top L of ``gallery`` (n, D) by
    :func:`ann_search` of its faiss ``index`` (a shortlist of :data:`QUERY_SHORTLIST` or 4 L,
    re-scored exactly) and its farthest item (the nearest to −q, the features being unit
    vectors; the largest exact distance in a shortlist of 64) — the ``candidates`` of
    :class:`~vreid.retrieval.online.NeighbourGraph`."""
    top = min(size, len(gallery))

    def search(query: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
        x = np.ascontiguousarray(query.cpu().numpy().reshape(1, -1), dtype=np.float32)
        d, ids = ann_search(index, gallery, x, top, max(QUERY_SHORTLIST, 4 * top))
        keep = ids[0] >= 0
        return ids[0][keep], d[0][keep], float(_farthest(index, gallery, x, 64)[0])

    return search


def _write_ann(root: Path, gen: int, model: str, index: Any) -> str:
    """The faiss index of a model's gallery in the neighbour generation (atomically)."""
    path = root / "neighbours" / generation_name(gen) / f"{model}.pq.faiss"
    with atomic_path(path) as tmp:
        _faiss().write_index(index, str(tmp))
    return str(path.relative_to(root))


def _weighted_heads(config: Config, attributes: bool) -> dict[str, float]:
    """{head: γ} of the attribute heads the retrieval settings weight, in the chain's order
    ({} without attribute features): the heads of the metadata neighbour lists."""
    if not attributes:
        return {}
    weights = {h: float(getattr(config.retrieval, key)) for h, key in WEIGHTED_HEADS}
    return {h: w for h, w in weights.items() if w > 0}


def metadata_lists(
    feats: np.ndarray,
    attrs: dict[str, np.ndarray],
    heads: dict[str, float],
    k: int,
    *,
    device: str = "cpu",
    others: np.ndarray | None = None,
    other_attrs: dict[str, np.ndarray] | None = None,
    maxima: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The lists of the combined distance d' = N(d) + Σ γ·N(d_head) (always exact):
    ``{"meta.indices" (n, k) int32, "meta.dists" (n, k) d', "meta.rowmax" (n,),
    "meta.maxima" (1 + H, n) component maxima}`` of ``feats`` (n, D) / ``attrs`` {head: (n, E)}
    among ``others`` / ``other_attrs`` (default: themselves); ``maxima``: see
    :func:`~vreid.retrieval.online.combined_neighbours`."""
    meta = [
        (attrs[h], None if other_attrs is None else other_attrs[h], w) for h, w in heads.items()
    ]
    idx, d, rowmax, comp = combined_neighbours(
        feats, k, others=others, metadata=meta, maxima=maxima, device=device
    )
    return {
        "meta.indices": idx.cpu().numpy().astype(np.int32),
        "meta.dists": d.cpu().numpy(),
        "meta.rowmax": rowmax.cpu().numpy(),
        "meta.maxima": comp.cpu().numpy(),
    }


def _add_metadata_lists(
    gallery: GalleryIndex,
    model: str,
    old_feats: np.ndarray,
    new_feats: np.ndarray,
    new_attrs: dict[str, np.ndarray],
    k: int,
    device: str,
) -> dict[str, np.ndarray]:
    """The metadata lists after appending items: old rows merge the new items in, except the
    rows whose component maxima the new items raise (the order of their whole d' row changes):
    those are recomputed against everything, like the new rows."""
    heads = gallery.metadata_weights
    old_n = len(old_feats)
    old_attrs = {h: np.asarray(gallery.attributes(h), dtype=np.float32) for h in heads}
    all_attrs = {h: np.concatenate([old_attrs[h], new_attrs[h]]) for h in heads}
    everything = np.concatenate([old_feats, new_feats])
    idx, d, rowmax, maxima = gallery.metadata_neighbours(model)
    near = metadata_lists(
        old_feats,
        old_attrs,
        heads,
        k,
        device=device,
        others=new_feats,
        other_attrs=new_attrs,
        maxima=maxima,
    )
    mi, md = merge_neighbours(
        torch.from_numpy(idx.astype(np.int64)),
        torch.from_numpy(np.asarray(d)),
        torch.from_numpy(near["meta.indices"].astype(np.int64)) + old_n,
        torch.from_numpy(near["meta.dists"]),
        k,
    )
    out = {
        "meta.indices": mi.numpy().astype(np.int32),
        "meta.dists": md.numpy(),
        "meta.rowmax": np.maximum(rowmax, near["meta.rowmax"]),
        "meta.maxima": near["meta.maxima"],
    }
    stale = np.nonzero((near["meta.maxima"] != maxima).any(0))[0]
    if len(stale):
        redo = metadata_lists(
            old_feats[stale],
            {h: a[stale] for h, a in old_attrs.items()},
            heads,
            k,
            device=device,
            others=everything,
            other_attrs=all_attrs,
        )
        out["meta.indices"][stale] = redo["meta.indices"]
        out["meta.dists"][stale] = redo["meta.dists"]
        out["meta.rowmax"][stale] = redo["meta.rowmax"]
        out["meta.maxima"][:, stale] = redo["meta.maxima"]
    new = metadata_lists(
        new_feats, new_attrs, heads, k, device=device, others=everything, other_attrs=all_attrs
    )
    return {
        key: np.concatenate([out[key], new[key]], axis=1 if key == "meta.maxima" else 0)
        for key in out
    }


# ---- building and adding
@dataclass
class IndexReport:
    root: Path
    count: int
    added: int  # negative: items removed
    seconds: float
    neighbours: dict[str, Any]


def _settings(config: Config, float16: bool, backend: str, k: int) -> dict[str, Any]:
    return {
        "float16": float16,
        "backend": backend,
        "neighbours_k": k,
        "flip": config.train.eval_flip,
        "crop": config.crop.model_dump(mode="json") if config.crop.enabled else None,
        "retrieval": config.retrieval.model_dump(mode="json"),
    }


def _write_shard(
    root: Path,
    shard_id: int,
    records: list[ImageRecord],
    models: list[dict[str, Any]],
    attribute_checkpoint: Path | None,
    config: Config,
    float16: bool,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Extract (or, when an interrupted run left them for the same images and settings, reuse)
    the files of one shard; returns its manifest entry."""
    folder = root / "shards" / shard_name(shard_id)
    items = {
        "paths": [str(r.path) for r in records],
        "names": [r.name for r in records],
        "camera": [-1 if r.camera is None else int(r.camera) for r in records],
        "track": [-1 if r.track is None else int(r.track) for r in records],
        "models": [m["sha256"] for m in models],
        "float16": float16,
        "crop": config.crop.enabled,
    }
    items_file = folder / "items.json"
    if folder.exists():
        try:
            same = read_json(items_file) == items
        except VreidError:
            same = False
        if not same:  # an abandoned shard of other inputs: never trusted
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(items_file, items)
    used = [r.path for r in records]
    if config.crop.enabled:
        crops = folder / "crops"
        if crops.exists():
            shutil.rmtree(crops)
        common = Path(os.path.commonpath([str(p.parent) for p in used]))
        used = _cropped(common, list(used), crops, config, device, progress)
    files: dict[str, str] = {}
    dtype = np.float16 if float16 else np.float32
    for m in models:
        out = folder / f"{m['name']}.npy"
        files[f"model:{m['name']}"] = str(out.relative_to(root))
        if out.is_file():
            continue  # resumed: written whole by an earlier run (atomic write)
        extract = Extractor(
            m["checkpoint"],
            device=device,
            batch_size=config.train.batch_size_eval,
            flip=config.train.eval_flip,
            num_workers=config.train.num_workers,
            progress=progress,
        )
        feats = extract(used, description=f"features ({m['name']})").numpy()
        write_npy_atomic(out, feats.astype(dtype))
    if attribute_checkpoint is not None:
        outs = {h: folder / f"attr_{h}.npy" for h in ATTRIBUTE_HEADS}
        if not all(p.is_file() for p in outs.values()):
            recs = [
                ImageRecord(Path(p), r.name, "gallery") for p, r in zip(used, records, strict=True)
            ]
            feats = attribute_features(
                attribute_checkpoint,
                recs,
                device=device,
                batch_size=config.train.batch_size_eval,
                num_workers=config.train.num_workers,
                progress=progress,
            )
            for h, p in outs.items():
                write_npy_atomic(p, feats[h].astype(np.float32))
        files.update({f"attr:{h}": str(p.relative_to(root)) for h, p in outs.items()})
    return {
        "id": shard_name(shard_id),
        "count": len(records),
        "items": str(items_file.relative_to(root)),
        "files": files,
    }


def _write_neighbours(
    root: Path, gen: int, lists: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Every model's arrays (``indices``, ``dists``, ``rowmax``, and ``meta.*`` with metadata) as
    ``<model>.<key>.npy`` in a new generation folder; returns the manifest's ``neighbours``."""
    folder = root / "neighbours" / generation_name(gen)
    files: dict[str, dict[str, str]] = {}
    for model, arrays in lists.items():
        files[model] = {}
        for key, arr in arrays.items():
            path = folder / f"{model}.{key}.npy"
            write_npy_atomic(path, arr)
            files[model][key] = str(path.relative_to(root))
    return {"dir": str(folder.relative_to(root)), "files": files}


def build_index(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    checkpoints: Sequence[str | os.PathLike[str]],
    *,
    config: Config | None = None,
    attribute_checkpoint: str | os.PathLike[str] | None = None,
    data_format: str | None = None,
    split: str = "gallery",
    float16: bool = False,
    backend: str = "exact",
    neighbours: int = DEFAULT_K,
    progress: bool = True,
) -> IndexReport:
    """Build an index of ``source`` (a folder of images, or with ``data_format`` a dataset whose
    ``split`` is indexed) in ``out``. An interrupted build resumes (finished feature files of the
    same images and checkpoints are reused); a finished index is never overwritten."""
    cfg = config or Config()
    if not checkpoints:
        raise ConfigError("an index needs at least one re-id checkpoint")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown index backend {backend!r} (use {', '.join(BACKENDS)})")
    root = Path(out)
    start = time.perf_counter()
    device = str(resolve_device(cfg.runtime.device, setting="runtime.device"))
    with run_lock(root):
        if (root / MANIFEST).is_file():
            raise VreidError(
                f"{root}: already holds an index; add images with `vreid index add {root} …` "
                "or choose another folder"
            )
        records = _source_records(Path(source), cfg, data_format, split)
        models = [
            {
                "name": name,
                "checkpoint": str(Path(c).resolve()),
                "sha256": file_sha256(c),
            }
            for name, c in zip(
                _model_names([Path(c) for c in checkpoints]), checkpoints, strict=True
            )
        ]
        attr = None
        if attribute_checkpoint is not None:
            attr = {
                "checkpoint": str(Path(attribute_checkpoint).resolve()),
                "sha256": file_sha256(attribute_checkpoint),
            }
        shard = _write_shard(
            root,
            0,
            records,
            models,
            Path(attribute_checkpoint) if attribute_checkpoint else None,
            cfg,
            float16,
            device,
            progress,
        )
        heads = _weighted_heads(cfg, attr is not None)
        ann_files: dict[str, str] = {}
        attrs = {h: np.load(root / shard["files"][f"attr:{h}"]).astype(np.float32) for h in heads}
        lists: dict[str, dict[str, np.ndarray]] = {}
        info: dict[str, Any] = {}
        for m in models:
            feats = np.load(root / shard["files"][f"model:{m['name']}"])
            m["dim"] = int(feats.shape[1])
            ann = ann_index(feats) if backend == "faiss" else None
            idx, d, rowmax, info[m["name"]] = compute_neighbours(
                feats, neighbours, backend=backend, device=device, index=ann
            )
            lists[m["name"]] = {"indices": idx, "dists": d, "rowmax": rowmax}
            if ann is not None:
                ann_files[m["name"]] = _write_ann(root, 1, m["name"], ann)
            if heads:
                lists[m["name"]].update(
                    metadata_lists(
                        feats.astype(np.float32), attrs, heads, neighbours, device=device
                    )
                )
        nb = _write_neighbours(root, 1, lists)
        nb.update({"k": int(idx.shape[1]), "generation": 1, "info": info})
        for name, rel in ann_files.items():
            nb["files"][name]["ann"] = rel
        if heads:
            nb["metadata"] = {"heads": list(heads), "weights": list(heads.values())}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "count": len(records),
            "models": models,
            "attributes": attr,
            "settings": _settings(cfg, float16, backend, neighbours),
            "source": {"path": str(Path(source).resolve()), "format": data_format, "split": split},
            "shards": [shard],
            "neighbours": nb,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_manifest(root, manifest)
    return IndexReport(root, len(records), len(records), time.perf_counter() - start, info)


def _built_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the finished index at ``root``, for a writer changing it."""
    manifest = read_manifest(root)
    if manifest is None:
        raise VreidError(f"{root}: no {MANIFEST}; build the index first (`vreid index build`)")
    return manifest


def add_to_index(
    index: str | os.PathLike[str],
    more: str | os.PathLike[str],
    *,
    config: Config | None = None,
    data_format: str | None = None,
    split: str = "gallery",
    progress: bool = True,
) -> IndexReport:
    """Append the images of ``more`` as a new shard with the index's own checkpoints and
    settings; the neighbour lists of the old items are merged with the new items (nothing else is
    recomputed) and the new items' lists are computed against everything."""
    root = Path(index)
    start = time.perf_counter()
    cfg = config or Config()
    device = str(resolve_device(cfg.runtime.device, setting="runtime.device"))
    with run_lock(root):
        manifest = _built_manifest(root)
        settings = manifest["settings"]
        # the index's settings win: the same features for every shard
        cfg.train.eval_flip = settings["flip"]
        for m in manifest["models"]:
            if file_sha256(m["checkpoint"]) != m["sha256"]:
                raise VreidError(
                    f"{m['checkpoint']}: changed since the index was built (sha256 differs); "
                    "build a new index"
                )
        records = _source_records(Path(more), cfg, data_format, split)
        known = set()
        for s in manifest["shards"]:
            known.update(read_json(root / s["items"])["paths"])
        records = [r for r in records if str(r.path) not in known]
        if not records:
            raise DatasetError(f"{more}: every image is already in the index {root}")
        attr = manifest.get("attributes")
        shard = _write_shard(
            root,
            _next_shard_id(manifest),
            records,
            manifest["models"],
            Path(attr["checkpoint"]) if attr else None,
            cfg,
            bool(settings["float16"]),
            device,
            progress,
        )
        old_n = int(manifest["count"])
        # lists shorter than asked for were complete (a small gallery): they grow with it
        k = min(int(settings["neighbours_k"]), old_n + len(records))
        backend = settings["backend"]
        gallery = GalleryIndex(root)
        lists: dict[str, dict[str, np.ndarray]] = {}
        info: dict[str, Any] = {}
        ann_files: dict[str, str] = {}
        gen = int(manifest["neighbours"]["generation"]) + 1
        for m in manifest["models"]:
            name = m["name"]
            old_feats = np.asarray(gallery.features(name), dtype=np.float32)
            new_feats = np.load(root / shard["files"][f"model:{name}"]).astype(np.float32)
            idx, d, rowmax = gallery.neighbours(name)
            # old rows: merge in the new items (exact: a (old, new) pass)
            ni, nd, nmax = exact_neighbours(old_feats, k, others=new_feats, device=device)
            mi, md = merge_neighbours(
                torch.from_numpy(idx.astype(np.int64)),
                torch.from_numpy(d),
                ni + old_n,
                nd,
                k,
            )
            old_rowmax = np.maximum(rowmax, nmax.numpy())
            # new rows: against everything
            everything = np.concatenate([old_feats, new_feats])
            ann = ann_index(everything) if backend == "faiss" else None
            ai, ad, amax, info[name] = compute_neighbours(
                new_feats, k, backend=backend, device=device, others=everything, index=ann
            )
            if ann is not None:
                ann_files[name] = _write_ann(root, gen, name, ann)
            lists[name] = {
                "indices": np.concatenate([mi.numpy().astype(np.int32), ai]),
                "dists": np.concatenate([md.numpy(), ad]),
                "rowmax": np.concatenate([old_rowmax, amax]).astype(np.float32),
            }
            if gallery.metadata_weights:
                new_attrs = {
                    h: np.load(root / shard["files"][f"attr:{h}"]).astype(np.float32)
                    for h in gallery.metadata_weights
                }
                lists[name].update(
                    _add_metadata_lists(gallery, name, old_feats, new_feats, new_attrs, k, device)
                )
        nb = _write_neighbours(root, gen, lists)
        nb.update({"k": k, "generation": gen, "info": info})
        for name, rel in ann_files.items():
            nb["files"][name]["ann"] = rel
        if "metadata" in manifest["neighbours"]:
            nb["metadata"] = manifest["neighbours"]["metadata"]
        manifest["shards"].append(shard)
        manifest["count"] = old_n + len(records)
        manifest["neighbours"] = nb
        write_manifest(root, manifest)
    return IndexReport(root, old_n + len(records), len(records), time.perf_counter() - start, info)


def _next_shard_id(manifest: dict[str, Any]) -> int:
    """A shard number no listed shard uses (removal replaces shards by new numbers)."""
    return 1 + max((int(sh["id"].rsplit("-", 1)[1]) for sh in manifest["shards"]), default=-1)


def _removed_ids(gallery: GalleryIndex, targets: Sequence[str | os.PathLike[str] | int]) -> list:
    """Global ids of the items named by ``targets``: ids (int or digit strings), image files or
    folders (every item under it) — each must name at least one item."""
    paths = gallery.items().paths
    by_path = {p: i for i, p in enumerate(paths)}
    out: set[int] = set()
    for t in targets:
        if isinstance(t, int) or str(t).isdigit():
            i = int(t)
            if not 0 <= i < len(paths):
                raise VreidError(f"gallery id {i} out of range 0…{len(paths) - 1}")
            out.add(i)
            continue
        p = Path(t).resolve()
        found = [by_path[str(p)]] if str(p) in by_path else []
        if not found:
            prefix = str(p).rstrip(os.sep) + os.sep
            found = [i for q, i in by_path.items() if q.startswith(prefix)]
        if not found:
            raise DatasetError(f"{t}: no item of the index {gallery.root} (an id, image or folder)")
        out.update(found)
    return sorted(out)


def remove_from_index(
    index: str | os.PathLike[str],
    targets: Sequence[str | os.PathLike[str] | int],
    *,
    config: Config | None = None,
) -> IndexReport:
    """Drop items (ids, image paths or folders) from an index. The shards that lose items are
    rewritten under new numbers; every kept row whose list held a removed item, or whose row
    maximum (any component's, with metadata) came from one, is recomputed exactly against the
    remaining gallery; the other rows only lose nothing and are renumbered. The faiss PQ index is
    rebuilt over the remaining items. Same guarantees as ``add``: the result equals a fresh
    build of the remaining items, and a crash leaves the previous index."""
    root = Path(index)
    start = time.perf_counter()
    cfg = config or Config()
    device = str(resolve_device(cfg.runtime.device, setting="runtime.device"))
    with run_lock(root):
        manifest = _built_manifest(root)
        gallery = GalleryIndex(root)
        drop = _removed_ids(gallery, targets)
        n = gallery.count
        if len(drop) == n:
            raise VreidError(f"{root}: removing every item would leave an empty index")
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        # shards: those that lose items are written again (kept rows) under new numbers
        shards, old_folders, offset = [], [], 0
        next_id = _next_shard_id(manifest)
        for sh in manifest["shards"]:
            sel = keep[offset : offset + sh["count"]]
            offset += sh["count"]
            if sel.all():
                shards.append(sh)
                continue
            old_folders.append(root / Path(sh["items"]).parent)
            if not sel.any():
                continue
            folder = root / "shards" / shard_name(next_id)
            items = read_json(root / sh["items"])
            for key in ("paths", "names", "camera", "track"):
                items[key] = [v for v, k in zip(items[key], sel, strict=True) if k]
            write_json_atomic(folder / "items.json", items)
            files = {}
            for key, rel in sh["files"].items():
                out = folder / Path(rel).name
                write_npy_atomic(out, np.load(root / rel)[sel])
                files[key] = str(out.relative_to(root))
            shards.append(
                {
                    "id": shard_name(next_id),
                    "count": int(sel.sum()),
                    "items": str((folder / "items.json").relative_to(root)),
                    "files": files,
                }
            )
            next_id += 1
        backend = manifest["settings"]["backend"]
        heads = gallery.metadata_weights
        k = min(int(manifest["neighbours"]["k"]), int(keep.sum()))
        removed = np.asarray(drop)
        lists: dict[str, dict[str, np.ndarray]] = {}
        info: dict[str, Any] = {}
        ann_files: dict[str, str] = {}
        gen = int(manifest["neighbours"]["generation"]) + 1
        attrs = {h: np.asarray(gallery.attributes(h), dtype=np.float32) for h in heads}
        for m in manifest["models"]:
            name = m["name"]
            feats = np.asarray(gallery.features(name), dtype=np.float32)
            rest = feats[keep]
            idx, d, rowmax = gallery.neighbours(name)
            # rows to recompute: a removed item in the list, or at the row's maximum
            gone_max = exact_neighbours(rest, 1, others=feats[removed], device=device)[2]
            redo = np.isin(idx[keep], removed).any(1) | (gone_max.numpy() >= rowmax[keep])
            ann = ann_index(rest) if backend == "faiss" else None
            arrays = {
                "indices": _renumber(idx, keep)[keep][:, :k],
                "dists": np.asarray(d)[keep][:, :k],
                "rowmax": np.asarray(rowmax)[keep],
            }
            rows = np.nonzero(redo)[0]
            if len(rows):
                ri, rd, rmax, info[name] = compute_neighbours(
                    rest[rows], k, backend=backend, device=device, others=rest, index=ann
                )
                arrays["indices"][rows], arrays["dists"][rows] = ri, rd
                arrays["rowmax"][rows] = rmax
            if heads:
                arrays.update(_remove_metadata_lists(gallery, name, feats, attrs, keep, k, device))
            lists[name] = arrays
            if ann is not None:
                ann_files[name] = _write_ann(root, gen, name, ann)
        nb = _write_neighbours(root, gen, lists)
        nb.update({"k": k, "generation": gen, "info": info})
        for name, rel in ann_files.items():
            nb["files"][name]["ann"] = rel
        if "metadata" in manifest["neighbours"]:
            nb["metadata"] = manifest["neighbours"]["metadata"]
        manifest["shards"] = shards
        manifest["count"] = int(keep.sum())
        manifest["neighbours"] = nb
        write_manifest(root, manifest)
        for folder in old_folders:  # listed by no manifest any more
            shutil.rmtree(folder, ignore_errors=True)
    return IndexReport(root, int(keep.sum()), -len(drop), time.perf_counter() - start, info)


def _renumber(idx: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Neighbour ids (N, K) in the numbering of the kept items (removed ones: −1)."""
    new_id = np.full(len(keep), -1, dtype=np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    return new_id[idx].astype(np.int32)


def _remove_metadata_lists(
    gallery: GalleryIndex,
    model: str,
    feats: np.ndarray,
    attrs: dict[str, np.ndarray],
    keep: np.ndarray,
    k: int,
    device: str,
) -> dict[str, np.ndarray]:
    """The metadata lists of the kept items: rows whose list held a removed item or any of
    whose component maxima came from one are recomputed against the remaining items."""
    heads = gallery.metadata_weights
    idx, d, rowmax, maxima = gallery.metadata_neighbours(model)
    removed = np.nonzero(~keep)[0]
    rest_attrs = {h: a[keep] for h, a in attrs.items()}
    # the component maxima over the removed items alone: equal to a row's maximum → it goes
    far = metadata_lists(
        feats[keep],
        rest_attrs,
        heads,
        1,
        device=device,
        others=feats[removed],
        other_attrs={h: a[removed] for h, a in attrs.items()},
    )["meta.maxima"]
    redo = np.isin(idx[keep], removed).any(1) | (far >= maxima[:, keep]).any(0)
    out = {
        "meta.indices": _renumber(idx, keep)[keep][:, :k],
        "meta.dists": np.asarray(d)[keep][:, :k],
        "meta.rowmax": np.asarray(rowmax)[keep],
        "meta.maxima": np.asarray(maxima)[:, keep],
    }
    rows = np.nonzero(redo)[0]
    if len(rows):
        fresh = metadata_lists(
            feats[keep][rows],
            {h: a[rows] for h, a in rest_attrs.items()},
            heads,
            k,
            device=device,
            others=feats[keep],
            other_attrs=rest_attrs,
        )
        out["meta.indices"][rows] = fresh["meta.indices"]
        out["meta.dists"][rows] = fresh["meta.dists"]
        out["meta.rowmax"][rows] = fresh["meta.rowmax"]
        out["meta.maxima"][:, rows] = fresh["meta.maxima"]
    return out


# ---- querying
@dataclass
class Hit:
    id: int
    distance: float
    path: str
    name: str
    camera: int
    track: int


class Searcher:
    """Queries against an index: features of the index's checkpoints, then the retrieval chain
    with online re-ranking of each model against the standing gallery."""

    def __init__(
        self,
        index: str | os.PathLike[str],
        *,
        config: Config | None = None,
        online: bool = True,
        candidates: int | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config or Config()
        self.device = str(resolve_device(self.config.runtime.device, setting="runtime.device"))
        self.index = GalleryIndex(index, device=self.device)
        self.index.check_memory()
        self.manifest = self.index.manifest
        self.online = online
        self.progress = progress
        # faiss indexes: d(q, ·) from a top-L search (L = candidates; 0: the full pass)
        files = self.manifest["neighbours"]["files"]
        has_ann = all(ann_file(files[m]) for m in self.index.models)
        self.candidates = (
            0 if not has_ann else DEFAULT_CANDIDATES if candidates is None else int(candidates)
        )
        self.config.train.eval_flip = self.manifest["settings"]["flip"]
        self.items = self.index.items()
        self._extractors: dict[str, Extractor] = {}
        # float32 gallery features in memory, shared with the neighbour graphs
        self._gallery = {
            m: np.array(self.index.features(m), dtype=np.float32) for m in self.index.models
        }
        self._attr = (
            {h: np.array(self.index.attributes(h), dtype=np.float32) for h in ATTRIBUTE_HEADS}
            if self.index.has_attributes
            else None
        )
        for m in self.manifest["models"]:
            if not Path(m["checkpoint"]).is_file():
                raise VreidError(f"{m['checkpoint']}: the index's checkpoint is missing")

    def extractor(self, model: dict[str, Any]) -> Extractor:
        if model["name"] not in self._extractors:
            self._extractors[model["name"]] = Extractor(
                model["checkpoint"],
                device=self.device,
                batch_size=self.config.train.batch_size_eval,
                flip=self.config.train.eval_flip,
                num_workers=0,
                progress=self.progress,
            )
        return self._extractors[model["name"]]

    def features_of(self, images: Sequence[Path]) -> tuple[dict[str, np.ndarray], Any]:
        """Features (and attribute features) of query image files, cropped like the gallery."""
        used = list(images)
        with tempfile.TemporaryDirectory() as tmp:
            if self.manifest["settings"].get("crop"):
                common = Path(os.path.commonpath([str(Path(p).parent) for p in used]))
                used = _cropped(common, used, Path(tmp) / "crops", self.config, self.device, False)
            feats = {
                m["name"]: self.extractor(m)(used, description="query features").numpy()
                for m in self.manifest["models"]
            }
            attrs = None
            if self._attr is not None:
                recs = [ImageRecord(Path(p), Path(p).name, "query") for p in used]
                attrs = attribute_features(
                    self.manifest["attributes"]["checkpoint"],
                    recs,
                    device=self.device,
                    progress=False,
                )
        return feats, attrs

    def features_of_items(self, ids: Sequence[int]) -> tuple[dict[str, np.ndarray], Any]:
        """The stored features of gallery items, as queries ("more like this one")."""
        sel = np.asarray(ids, dtype=np.int64)
        if sel.size and (sel.min() < 0 or sel.max() >= self.index.count):
            raise VreidError(f"gallery id out of range 0…{self.index.count - 1}")
        feats = {m: np.asarray(self._gallery[m][sel], dtype=np.float32) for m in self._gallery}
        attrs = None if self._attr is None else {h: a[sel] for h, a in self._attr.items()}
        return feats, attrs

    def distances(self, feats: dict[str, np.ndarray], attrs: Any = None) -> tuple[np.ndarray, str]:
        """The chain's final (q, g) distances and the row's name. Each query is one chain run
        against the standing gallery (items = that query + the gallery), so a query's answer
        never depends on the other queries sent with it."""
        rc = self.config.retrieval
        rerankers = {}
        if self.online and rc.rerank:
            rerankers = {m: self._reranker(m) for m in feats}
        num = len(next(iter(feats.values())))
        out = np.empty((num, self.index.count), dtype=np.float32)
        row = ""
        for i in range(num):
            attributes = None
            if attrs is not None and self._attr is not None:
                attributes = {h: (attrs[h][i : i + 1], self._attr[h]) for h in ATTRIBUTE_HEADS}
            chain = RetrievalChain(
                rc,
                {m: (feats[m][i : i + 1], self._gallery[m]) for m in feats},
                attributes=attributes,
                gallery_tracks=self.items.track,
                device=self.device,
                rerankers=rerankers,
            )
            out[i] = chain.final_distances()[0]
            row = chain.final
        return out, row

    def _reranker(self, model: str) -> Any:
        """The chain's online re-ranking of ``model``: the plain lists without metadata, the
        metadata lists when the chain's heads and γ's are the ones they were built with; None
        otherwise (the chain then runs the full ``rerank``: the lists of other γ's would be a
        new O(N²) pass, i.e. a new build)."""

        def rerank_online(
            q: np.ndarray, *, k1: int, k2: int, lambda_value: float, metadata: dict[str, Any]
        ) -> np.ndarray | None:
            kw = {"k1": k1, "k2": k2, "lambda_value": lambda_value}
            if not metadata:
                graph = self.index.graph(model, self._gallery[model])
                if self.candidates and graph.candidates is None:
                    graph.candidates = self._top_l(model)
                return graph.rerank(q, **kw)
            if {h: w for h, (_, _, w) in metadata.items()} != self.index.metadata_weights:
                return None
            graph = self.index.graph(model, self._gallery[model], metadata=True)
            heads = self.index.metadata_weights
            return graph.rerank(q, metadata=[metadata[h][0] for h in heads], **kw)

        return rerank_online

    def _top_l(self, model: str) -> Any:
        path = self.index.root / ann_file(self.manifest["neighbours"]["files"][model])
        index = _faiss().read_index(str(path))
        return top_l_search(index, self._gallery[model], self.candidates)

    def hits(self, distances: np.ndarray, top: int | None = None, offset: int = 0) -> list:
        top = top or self.config.retrieval.top
        ranking = top_indices(distances, min(offset + top, distances.shape[1]))[:, offset:]
        it = self.items
        return [
            [
                Hit(
                    int(g),
                    float(distances[q, g]),
                    it.paths[g],
                    it.names[g],
                    int(it.camera[g]),
                    int(it.track[g]),
                )
                for g in row
            ]
            for q, row in enumerate(ranking)
        ]

    def search(self, images: Sequence[str | os.PathLike[str]], top: int | None = None) -> list:
        feats, attrs = self.features_of([Path(p) for p in images])
        dist, _ = self.distances(feats, attrs)
        return self.hits(dist, top)


def query_images(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        paths = image_paths(source)
        if paths:
            return paths
    raise DatasetError(f"{source}: no query images (an image file or a folder of images)")
