"""`vreid index build/add` and `vreid query`: real features of random-weights models on the
``tiny`` synthetic data; results recomputed with the retrieval chain's full re-ranking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vreid.core.config import load_config
from vreid.core.errors import VreidError
from vreid.inference.extract import Extractor
from vreid.retrieval.chain import RetrievalChain
from vreid.retrieval.index_store import MANIFEST, GalleryIndex, write_manifest
from vreid.retrieval.online import exact_neighbours
from vreid.retrieval.online import timings as online_timings
from vreid.workflows.index import (
    Searcher,
    add_to_index,
    build_index,
    compute_neighbours,
    remove_from_index,
)


def _cfg(*extra: str):
    return load_config(None, ["runtime.device=cpu", *extra])


@pytest.fixture(scope="module")
def built(random_checkpoints, image_folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "ix"
    build_index(image_folders["gallery"], out, random_checkpoints, config=_cfg(), progress=False)
    return out


def test_build_stores_features_lists_and_manifest(built, random_checkpoints, image_folders):
    ix = GalleryIndex(built)
    paths = sorted(image_folders["gallery"].iterdir())
    assert ix.count == len(paths)
    assert ix.items().paths == [str(p.resolve()) for p in paths]
    m = ix.manifest
    assert [x["name"] for x in m["models"]] == ["model0", "model1"]
    assert all(len(x["sha256"]) == 64 for x in m["models"])
    feats = Extractor(random_checkpoints[0], device="cpu")(paths).numpy()
    np.testing.assert_allclose(ix.features("model0"), feats, atol=1e-5)
    idx, d, rowmax = ix.neighbours("model0")
    _ref_idx, ref_d, ref_max = exact_neighbours(feats, idx.shape[1])
    np.testing.assert_allclose(d, ref_d.numpy(), atol=1e-5)
    np.testing.assert_allclose(rowmax, ref_max.numpy(), atol=1e-5)


@pytest.mark.parametrize("rerank", [True, False])
def test_query_equals_the_chain_with_full_reranking(
    built, random_checkpoints, image_folders, rerank
):
    cfg = _cfg(f"retrieval.rerank={rerank}")
    searcher = Searcher(built, config=cfg)
    queries = sorted(image_folders["query"].iterdir())
    feats, _ = searcher.features_of(queries)
    online, row = searcher.distances(feats)
    gallery = {m: np.array(GalleryIndex(built).features(m)) for m in feats}
    for i in range(len(queries)):  # the chain on one query and the gallery, full re-ranking
        chain = RetrievalChain(
            cfg.retrieval,
            {m: (feats[m][i : i + 1], gallery[m]) for m in feats},
            device="cpu",
        )
        ref = chain.final_distances()[0]
        np.testing.assert_allclose(online[i], ref, atol=1e-5)
        assert (np.argsort(online[i], kind="stable") == np.argsort(ref, kind="stable")).all()
    assert row == ("ensemble+rerank" if rerank else "ensemble")
    hits = searcher.search(queries[:1], top=3)[0]
    assert [h.id for h in hits] == np.argsort(online[0], kind="stable")[:3].tolist()


def test_add_equals_building_everything(built, random_checkpoints, image_folders, tmp_path):
    grown = tmp_path / "grown"
    shutil.copytree(built, grown)
    add_to_index(grown, image_folders["more"], config=_cfg(), progress=False)
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("gallery", "more"):
        for p in image_folders[sub].iterdir():
            shutil.copy(p, both / p.name)
    a = GalleryIndex(grown)
    ref = tmp_path / "ref"
    build_index(both, ref, random_checkpoints, config=_cfg(), progress=False)
    b = GalleryIndex(ref)
    order = np.argsort([Path(p).name for p in a.items().paths])  # same images, other order
    assert [Path(a.items().paths[i]).name for i in order] == [Path(p).name for p in b.items().paths]
    fa, fb = np.asarray(a.features("model0"))[order], np.asarray(b.features("model0"))
    np.testing.assert_allclose(fa, fb, atol=1e-5)
    _, da, ma = a.neighbours("model0")
    _, db, mb = b.neighbours("model0")
    np.testing.assert_allclose(da[order], db, atol=1e-5)
    np.testing.assert_allclose(ma[order], mb, atol=1e-5)
    assert len(a.manifest["shards"]) == 2
    assert a.manifest["neighbours"]["generation"] == 2
    assert [d.name for d in (grown / "neighbours").iterdir()] == ["gen-00002"]
    with pytest.raises(VreidError, match="already in the index"):
        add_to_index(grown, image_folders["more"], config=_cfg(), progress=False)


def test_an_interrupted_build_resumes_and_is_never_trusted(
    random_checkpoints, image_folders, tmp_path
):
    out = tmp_path / "ix"
    build_index(image_folders["more"], out, random_checkpoints, config=_cfg(), progress=False)
    # simulate a build killed after the first model's features: no manifest, no second model
    (out / MANIFEST).unlink()
    kept = out / "shards" / "shard-00000" / "model0.npy"
    (out / "shards" / "shard-00000" / "model1.npy").unlink()
    before = kept.stat().st_mtime_ns
    with pytest.raises(VreidError, match=r"no manifest\.json"):
        Searcher(out, config=_cfg())
    build_index(image_folders["more"], out, random_checkpoints, config=_cfg(), progress=False)
    assert kept.stat().st_mtime_ns == before  # reused, not recomputed
    assert GalleryIndex(out).count == len(list(image_folders["more"].iterdir()))
    with pytest.raises(VreidError, match="already holds an index"):
        build_index(image_folders["more"], out, random_checkpoints, config=_cfg(), progress=False)


def test_dataset_split_float16_and_cameras(random_checkpoints, tiny_synth, tmp_path):
    out = tmp_path / "ds"
    build_index(
        tiny_synth / "real",
        out,
        random_checkpoints[:1],
        config=_cfg(),
        data_format="aic20",
        float16=True,
        progress=False,
    )
    ix = GalleryIndex(out)
    assert ix.features("model0").dtype == np.float16
    items = ix.items()
    assert (items.camera >= 0).all()
    assert (items.track >= 0).any()
    hits = Searcher(out, config=_cfg()).search(
        sorted((tiny_synth / "real" / "image_query").iterdir())[:1], top=5
    )[0]
    assert len(hits) == 5
    assert all(h.camera >= 0 for h in hits)


def test_faiss_pq_lists_recall_and_row_maxima(monkeypatch):
    """Beyond PQ_MIN_ITEMS the faiss backend is PQ fast scan + exact re-scoring: the lists are
    sorted exact distances (ties by id) and nearly the exact lists; row maxima from a sample are
    lower bounds close to the exact ones."""
    pytest.importorskip("faiss")
    from vreid.workflows import index as wf

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 128)).astype(np.float32)
    x = centres[rng.integers(0, 40, 2000)] + 0.6 * rng.normal(size=(2000, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    monkeypatch.setattr(wf, "EXACT_ROWMAX", 500)
    monkeypatch.setattr(wf, "FAR_SAMPLE", 1000)
    idx, d, rowmax, info = compute_neighbours(x, 20, backend="faiss")
    assert info["index"] == "PQ32x4fs"  # 128-d: 4-d sub-vectors for queries
    assert info["lists_index"] == "PQ16x4fs"  # 8-d for the lists
    assert info["rowmax"] == "sample of 1000"
    assert info["lists_recall@20"] > 0.95
    assert info["recall@100"] > 0.95
    ref_idx, _, ref_max = exact_neighbours(x, 20)
    assert wf.recall_at(idx, ref_idx.numpy()) > 0.95
    # exact distances of what was found, sorted, ties by id
    np.testing.assert_allclose(d, ((x[:, None] - x[idx]) ** 2).sum(2), atol=1e-5)
    assert (np.diff(d, axis=1) >= 0).all()
    # the faiss search in batches (the last one partial) gives the same answer
    ann = wf.ann_index(x)
    whole = wf.ann_search(ann, x, x, 20, 80)
    for got, want in zip(wf.ann_search(ann, x, x, 20, 80, batch=300), whole, strict=True):
        np.testing.assert_array_equal(got, want)
    assert (rowmax <= ref_max.numpy() + 1e-5).all()
    assert np.mean(rowmax / ref_max.numpy()) > 0.97
    # a gallery between EXACT_ROWMAX and FAR_SAMPLE items: the sample is every item
    monkeypatch.setattr(wf, "FAR_SAMPLE", 5000)
    every, how = wf._row_maxima(x, x)
    assert how == "sample of 2000"
    assert (every <= ref_max.numpy() + 1e-5).all()
    assert np.mean(every / ref_max.numpy()) > 0.99


def test_faiss_lists_report_recall():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, _d, rowmax, info = compute_neighbours(x, 20, backend="faiss")
    assert idx.shape == (600, 20)
    assert info["recall@100"] > 0.9
    _, _, ref_max = exact_neighbours(x, 2)
    np.testing.assert_allclose(rowmax, ref_max.numpy(), atol=1e-4)


def test_cli_build_add_query(random_checkpoints, image_folders, tmp_path, vreid_cli):
    out = tmp_path / "cli"
    ck = [a for c in random_checkpoints for a in ("--checkpoint", str(c))]
    r = vreid_cli(
        "index",
        "build",
        str(image_folders["gallery"]),
        "--out",
        str(out),
        *ck,
        "--device",
        "cpu",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    r = vreid_cli(
        "index", "add", str(out), str(image_folders["more"]), "--device", "cpu", "--quiet"
    )
    assert r.returncode == 0, r.stderr
    r = vreid_cli(
        "query", str(out), str(image_folders["query"]), "--top", "4", "--json", "--device", "cpu"
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(list(image_folders["query"].iterdir()))
    assert all(len(x["hits"]) == 4 for x in lines)
    r = vreid_cli("query", str(tmp_path / "nothing"), str(image_folders["query"]))
    assert r.returncode == 2
    assert "manifest.json" in r.stderr


@pytest.fixture(scope="module")
def built_with_attributes(
    random_checkpoints, random_attribute_checkpoint, image_folders, tmp_path_factory
) -> Path:
    out = tmp_path_factory.mktemp("index_attr") / "ix"
    build_index(
        image_folders["gallery"],
        out,
        random_checkpoints,
        config=_cfg(),
        attribute_checkpoint=random_attribute_checkpoint,
        progress=False,
    )
    return out


@pytest.mark.parametrize(
    "settings",
    [
        (),  # the γ's the metadata lists were built with: online
        ("retrieval.k1=6", "retrieval.k2=2", "retrieval.lambda_value=0.5"),  # online
        ("retrieval.gamma_type=0.4",),  # other γ's: the chain's full re-ranking
    ],
)
def test_query_with_attribute_metadata_equals_the_chain(
    built_with_attributes, image_folders, settings
):
    cfg = _cfg(*settings)
    searcher = Searcher(built_with_attributes, config=cfg)
    assert searcher.index.metadata_weights == {"type": 0.2, "color": 0.1}
    queries = sorted(image_folders["query"].iterdir())
    feats, attrs = searcher.features_of(queries)
    online_timings.clear()
    online, row = searcher.distances(feats, attrs)
    # the online path ran where the lists fit the γ's (it records its phases), and only there
    assert bool(online_timings) == (settings != ("retrieval.gamma_type=0.4",))
    assert row == "ensemble+rerank+metadata"
    ix = GalleryIndex(built_with_attributes)
    gallery = {m: np.array(ix.features(m)) for m in feats}
    gallery_attrs = {h: np.array(ix.attributes(h)) for h in ("type", "color")}
    for i in range(len(queries)):
        chain = RetrievalChain(
            cfg.retrieval,
            {m: (feats[m][i : i + 1], gallery[m]) for m in feats},
            attributes={h: (attrs[h][i : i + 1], a) for h, a in gallery_attrs.items()},
            device="cpu",
        )
        ref = chain.final_distances()[0]
        np.testing.assert_allclose(online[i], ref, atol=1e-5)
        assert (np.argsort(online[i], kind="stable") == np.argsort(ref, kind="stable")).all()


def test_add_with_attributes_equals_building_everything(
    built_with_attributes, random_checkpoints, random_attribute_checkpoint, image_folders, tmp_path
):
    grown = tmp_path / "grown"
    shutil.copytree(built_with_attributes, grown)
    add_to_index(grown, image_folders["more"], config=_cfg(), progress=False)
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("gallery", "more"):
        for p in image_folders[sub].iterdir():
            shutil.copy(p, both / p.name)
    ref = tmp_path / "ref"
    build_index(
        both,
        ref,
        random_checkpoints,
        config=_cfg(),
        attribute_checkpoint=random_attribute_checkpoint,
        progress=False,
    )
    a, b = GalleryIndex(grown), GalleryIndex(ref)
    assert a.metadata_weights == b.metadata_weights == {"type": 0.2, "color": 0.1}
    order = np.argsort([Path(p).name for p in a.items().paths])
    inverse = np.argsort(order)  # old id → id in the fresh build
    for model in ("model0", "model1"):
        ia, da, ra, ma = a.metadata_neighbours(model)
        ib, db, rb, mb = b.metadata_neighbours(model)
        # float32 rounding of |x|² + |y|² − 2x·y over blocks of another shape: ~2e-5 relative
        np.testing.assert_allclose(da[order], db, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ra[order], rb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ma[:, order], mb, rtol=1e-4, atol=1e-5)
        assert (inverse[ia[order]] == ib).mean() > 0.99  # the same lists (up to float ties)
        # some old rows had a component maximum raised by the new items (recomputed rows)
        before = GalleryIndex(built_with_attributes).metadata_neighbours(model)[3]
        assert (ma[:, : before.shape[1]] > before).any(0).sum() > 0


def test_faiss_index_queries_through_a_top_l_search(random_checkpoints, image_folders, tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "fx"
    build_index(
        image_folders["gallery"],
        out,
        random_checkpoints[:1],
        config=_cfg(),
        backend="faiss",
        progress=False,
    )
    files = GalleryIndex(out).manifest["neighbours"]["files"]["model0"]
    assert (out / files["ann"]).is_file()
    queries = sorted(image_folders["query"].iterdir())
    full = Searcher(out, config=_cfg(), candidates=0)
    assert full.candidates == 0
    feats, _ = full.features_of(queries)
    ref, _ = full.distances(feats)
    top_l = Searcher(out, config=_cfg())
    assert top_l.candidates == 1000  # the default: more than the gallery, every item found
    online_timings.clear()
    got, _ = top_l.distances(feats)
    assert online_timings  # the online path ran
    np.testing.assert_allclose(got, ref, atol=1e-5)
    few, _ = Searcher(out, config=_cfg(), candidates=5).distances(feats)
    assert few.shape == ref.shape
    for a, e in zip(few, ref, strict=True):  # the 5 candidates lead the ranking
        assert np.argsort(a, kind="stable")[0] == np.argsort(e, kind="stable")[0]
    add_to_index(out, image_folders["more"], config=_cfg(), progress=False)
    grown = GalleryIndex(out).manifest["neighbours"]["files"]["model0"]
    assert grown["ann"].startswith("neighbours/gen-00002/")
    assert Searcher(out, config=_cfg()).distances(feats)[0].shape[1] == GalleryIndex(out).count
    # an index built before the PQ backend stored an HNSW graph under "hnsw": still searched
    faiss = pytest.importorskip("faiss")
    manifest = GalleryIndex(out).manifest
    files = manifest["neighbours"]["files"]["model0"]
    graph = faiss.IndexHNSWFlat(int(manifest["models"][0]["dim"]), 16)
    graph.add(np.asarray(GalleryIndex(out).features("model0"), dtype=np.float32))
    legacy = files.pop("ann").replace(".pq.faiss", ".hnsw.faiss")
    faiss.write_index(graph, str(out / legacy))
    files["hnsw"] = legacy
    write_manifest(out, manifest)
    old = Searcher(out, config=_cfg())
    assert old.candidates == 1000
    np.testing.assert_allclose(
        old.distances(feats)[0],
        Searcher(out, config=_cfg(), candidates=0).distances(feats)[0],
        atol=1e-5,
    )


@pytest.mark.parametrize("attributes", [False, True])
def test_remove_equals_building_the_rest(
    random_checkpoints, random_attribute_checkpoint, image_folders, tmp_path, vreid_cli, attributes
):
    attr = {"attribute_checkpoint": random_attribute_checkpoint} if attributes else {}
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("gallery", "more"):
        for p in image_folders[sub].iterdir():
            shutil.copy(p, both / f"{sub}_{p.name}")
    ix = tmp_path / "ix"
    build_index(both, ix, random_checkpoints, config=_cfg(), progress=False, **attr)
    gone = sorted(both.glob("more_*"))
    drop_ids = [i for i, p in enumerate(GalleryIndex(ix).items().paths) if "more_" in p][:2]
    remove_from_index(ix, [str(p) for p in gone[2:]] + drop_ids, config=_cfg())
    assert [d.name for d in (ix / "neighbours").iterdir()] == ["gen-00002"]
    rest = tmp_path / "rest"
    rest.mkdir()
    for p in both.glob("gallery_*"):
        shutil.copy(p, rest / p.name)
    ref = tmp_path / "ref"
    build_index(rest, ref, random_checkpoints, config=_cfg(), progress=False, **attr)
    a, b = GalleryIndex(ix), GalleryIndex(ref)
    assert [Path(p).name for p in a.items().paths] == [Path(p).name for p in b.items().paths]
    for model in ("model0", "model1"):
        np.testing.assert_allclose(a.features(model), b.features(model), atol=1e-5)
        ia, da, ma = a.neighbours(model)
        ib, db, mb = b.neighbours(model)
        np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ma, mb, rtol=1e-4, atol=1e-5)
        assert (ia == ib).mean() > 0.99  # the same lists (up to float ties)
        if attributes:
            got, want = a.metadata_neighbours(model), b.metadata_neighbours(model)
            for x, y in zip(got[1:], want[1:], strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
            assert (got[0] == want[0]).mean() > 0.99
    # the CLI: one more item by id, then an id that is not there
    r = vreid_cli("index", "remove", str(ix), "0", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert GalleryIndex(ix).count == b.count - 1
    r = vreid_cli("index", "remove", str(ix), "100000", "--device", "cpu")
    assert r.returncode == 2
    assert "out of range" in r.stderr
