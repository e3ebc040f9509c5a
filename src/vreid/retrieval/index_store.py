"""The on-disk gallery index: shards of features, global neighbour lists, one manifest.

Layout of an index folder (see docs/readme/index.md)::

    INDEX/
      manifest.json                 the ONLY file a reader trusts: lists every file below
      shards/shard-00000/           one shard per `build` / `add` (items in manifest order)
        items.json                  paths, names, camera, track of its images (+ settings hash)
        <model>.npy                 (n, D) features, float32 or float16
        attr_type.npy, attr_color.npy   attribute features (when an attribute model was given)
      neighbours/gen-00001/         one generation per build/add
        <model>.indices.npy         (N, K) int32 global item ids, sorted by D (ties by id)
        <model>.dists.npy           (N, K) float32 squared distances
        <model>.rowmax.npy          (N,) float32 largest squared distance of each row
        <model>.meta.{indices,dists,rowmax,maxima}.npy   the same for the combined distance with
                                    the attribute heads (and per-component row maxima)
        <model>.pq.faiss            the faiss backend's PQ codes (queries' top-L search; an
                                    index built before this version: <model>.hnsw.faiss)

Writers create new files (shards, a new neighbour generation), then atomically replace
``manifest.json`` with one listing them; a file the manifest does not list is never read, so an
interrupted build or add leaves at worst unused files (reused on resume or removed). Items are
numbered globally in shard order, so a reader can hold the shards anywhere (other disks, other
machines) and concatenate; only the neighbour lists are global.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import read_json, read_npy, write_json_atomic
from vreid.core.errors import VreidError
from vreid.retrieval.online import NeighbourGraph

FORMAT = "vreid-index"
VERSION = 1
MANIFEST = "manifest.json"
ATTRIBUTE_HEADS = ("type", "color")


def ann_file(files: dict[str, Any]) -> str | None:
    """The faiss index file of a model's neighbour files (``ann``; ``hnsw`` in indexes built
    before the PQ backend), or None (exact backend)."""
    return files.get("ann") or files.get("hnsw")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def generation_name(i: int) -> str:
    return f"gen-{i:05d}"


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable; cgroup limit when lower)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
            if text.isdigit():
                avail = min(avail or int(text), int(text))
        except OSError:
            continue
    return avail if avail is not None else 1 << 62


@dataclass
class Items:
    """The gallery's images: absolute paths, display names, camera and track (-1: unknown)."""

    paths: list[str]
    names: list[str]
    camera: np.ndarray
    track: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


class GalleryIndex:
    """A read-only view of the index a manifest describes (files memory-mapped)."""

    def __init__(self, root: str | os.PathLike[str], *, device: str | None = "cpu") -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise VreidError(
                f"{self.root}: no {MANIFEST} — not a vreid index (or its build never finished; "
                "run `vreid index build` again to resume)"
            )
        self.manifest = read_json(path)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise VreidError(
                f"{path}: not a {FORMAT} manifest of version {VERSION} "
                f"(found {self.manifest.get('format')!r} {self.manifest.get('version')!r})"
            )
        self.device = device
        self._graphs: dict[tuple[str, bool], NeighbourGraph] = {}
        self._items: Items | None = None

    # ---- what the manifest says
    @property
    def models(self) -> list[str]:
        return [m["name"] for m in self.manifest["models"]]

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.manifest["shards"])

    @property
    def has_attributes(self) -> bool:
        return self.manifest.get("attributes") is not None

    def _file(self, rel: str) -> Path:
        return self.root / rel

    def items(self) -> Items:
        if self._items is None:
            paths, names, cams, tracks = [], [], [], []
            for shard in self.shards:
                data = read_json(self._file(shard["items"]))
                paths += data["paths"]
                names += data["names"]
                cams += data["camera"]
                tracks += data["track"]
            self._items = Items(
                paths, names, np.asarray(cams, dtype=np.int64), np.asarray(tracks, dtype=np.int64)
            )
            if len(self._items) != self.count:
                raise VreidError(
                    f"{self.root}: the shards hold {len(self._items)} items, the manifest says "
                    f"{self.count}"
                )
        return self._items

    def _concat(self, key: str) -> np.ndarray:
        parts = [np.load(self._file(s["files"][key]), mmap_mode="r") for s in self.shards]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def features(self, model: str) -> np.ndarray:
        """(N, D) features of ``model`` (float32 or float16 as stored; memory-mapped, one shard)."""
        if model not in self.models:
            raise VreidError(f"{self.root}: no model {model!r} (has {', '.join(self.models)})")
        return self._concat(f"model:{model}")

    def attributes(self, head: str) -> np.ndarray:
        return self._concat(f"attr:{head}")

    def neighbours(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        files = self.manifest["neighbours"]["files"][model]
        return tuple(read_npy(self._file(files[k])) for k in ("indices", "dists", "rowmax"))  # type: ignore[return-value]

    @property
    def metadata_weights(self) -> dict[str, float]:
        """{head: γ} the metadata lists were built for ({} when there are none)."""
        meta = self.manifest["neighbours"].get("metadata") or {}
        return dict(zip(meta.get("heads", []), meta.get("weights", []), strict=True))

    def metadata_neighbours(self, model: str) -> tuple[np.ndarray, ...]:
        """``(indices (N, K), d' (N, K), rowmax of d' (N,), component maxima (1 + H, N))`` of the
        combined distance with the attribute heads of :attr:`metadata_weights`."""
        files = self.manifest["neighbours"]["files"][model]
        keys = ("meta.indices", "meta.dists", "meta.rowmax", "meta.maxima")
        return tuple(read_npy(self._file(files[k])) for k in keys)

    def memory_needed(self) -> int:
        """Bytes a query process holds: float32 features and neighbour lists of every model
        (14 bytes per entry with the index-order permutation), and the sparse re-ranking sets
        with the rank table (≈ 1,200 bytes per item and model: 1,173 measured at k1 = 20 on
        the index benchmark's features); twice the lists and sets with metadata lists; the
        faiss index: PQ codes (half a byte per sub-quantiser), or an older index's HNSW graph
        (a copy of the features and ≈ 2M links per item)."""
        total = 0
        k = int(self.manifest["neighbours"]["k"])
        lists = 2 if self.metadata_weights else 1  # plain lists, and the metadata ones
        files = self.manifest["neighbours"]["files"]
        for m in self.manifest["models"]:
            total += self.count * (4 * int(m["dim"]) + lists * (14 * k + 4 + 1200))
            mine = files.get(m["name"], {})
            if "hnsw" in mine:  # the graph holds its own copy of the features
                total += self.count * (4 * int(m["dim"]) + 2 * 32 * 4)
            elif "ann" in mine:  # 4-bit codes over 4-d sub-vectors: dim / 8 bytes
                total += self.count * max(1, int(m["dim"]) // 8)
        return total

    def check_memory(self, fraction: float = 0.8) -> None:
        need, avail = self.memory_needed(), available_memory()
        if need > fraction * avail:
            raise VreidError(
                f"{self.root}: querying this index needs about {need / 2**30:.1f} GiB of memory, "
                f"{avail / 2**30:.1f} GiB are available; use a machine with more memory, fewer "
                "models, or split the gallery into several indexes"
            )

    def graph(
        self, model: str, feats: np.ndarray | None = None, *, metadata: bool = False
    ) -> NeighbourGraph:
        """The model's :class:`NeighbourGraph` (features in float32, in memory; ``feats``: the
        float32 features if the caller holds them already, shared), loaded once; ``metadata``:
        the one of the combined distance with the attribute heads (:attr:`metadata_weights`)."""
        key = (model, metadata)
        if key not in self._graphs:
            if feats is None:
                feats = np.array(self.features(model), dtype=np.float32)
            if metadata:
                idx, d, rowmax, maxima = self.metadata_neighbours(model)
                heads = [
                    (np.asarray(self.attributes(h), dtype=np.float32), w)
                    for h, w in self.metadata_weights.items()
                ]
                self._graphs[key] = NeighbourGraph(
                    feats, idx, d, rowmax, metadata=heads, maxima=maxima, device=self.device
                )
            else:
                idx, d, rowmax = self.neighbours(model)
                self._graphs[key] = NeighbourGraph(feats, idx, d, rowmax, device=self.device)
        return self._graphs[key]


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace the manifest, then remove files no manifest lists any more (older
    neighbour generations, shards of an abandoned build)."""
    write_json_atomic(root / MANIFEST, manifest)
    live_gen = Path(manifest["neighbours"]["dir"]).name
    gens = root / "neighbours"
    if gens.is_dir():
        for d in gens.iterdir():
            if d.name != live_gen:
                shutil.rmtree(d, ignore_errors=True)


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    return read_json(path) if path.is_file() else None
