"""Why does the metadata step help or not? A diagnosis of a finished pipeline run on synthetic data.

The paper adds colour/type distances inside k-reciprocal re-ranking (d' = N(d) + γ_type·N(D_type)
+ γ_colour·N(D_colour), section 3.4) and takes them from the attribute model's penultimate
features rather than its predictions. On ``vreid synth`` data the true colour and type of every
test vehicle are known (``real/vehicle_attributes.csv``), which no real dataset offers, so this
script can separate the two possible causes of a metadata step that does not help:

1. the attribute model: accuracy of each head on the *test* images the metadata is applied to
   (the pipeline's attribute evaluation uses held-out identities of the set it trained on), beside
   always guessing the majority class of those images;
2. the mechanism: the same chain with the metadata taken from (a) the penultimate features
   (paper), (b) the predicted class probabilities, (c) the true labels (one-hot: an oracle, the
   best any attribute model could give), each over a γ grid.

It reads only a run's artefacts (``records.json``, ``features/<model>``,
``attributes/features/<head>[_probs]``) and the synthetic labels; nothing is trained. The numbers
are on the test split: a diagnosis, not a way to choose settings (``vreid tune`` chooses them on
validation identities).

Usage: ``python benchmarks/metadata.py RUN_DIR [RUN_DIR …] --synth SYNTH_ROOT [--json OUT]``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.config import RetrievalConfig, load_config
from vreid.data.attributes import ATTRIBUTE_CLASSES, ATTRIBUTE_TABLE, IGNORE_INDEX
from vreid.retrieval.chain import RetrievalChain, ground_truth, load_pair, score

GAMMAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
HEADS = ("type", "color")


def _true_classes(synth_real: Path) -> dict[str, dict[int, int]]:
    """``{head: {vehicle id: class index}}`` from the synthetic ``vehicle_attributes.csv``."""
    out: dict[str, dict[int, int]] = {h: {} for h in HEADS}
    with (synth_real / "vehicle_attributes.csv").open() as fh:
        for row in csv.DictReader(fh):
            for head in HEADS:
                cls = ATTRIBUTE_TABLE[head].get(row[head])
                out[head][int(row["vehicle_id"])] = (
                    ATTRIBUTE_CLASSES[head].index(cls) if cls is not None else IGNORE_INDEX
                )
    return out


class _Records:
    def __init__(self, run: Path) -> None:
        recs = json.loads((run / "records.json").read_text())
        self.names = {s: [r["name"] for r in recs[s]] for s in ("query", "gallery")}
        self.ids = {s: np.array([r["vehicle_id"] for r in recs[s]]) for s in ("query", "gallery")}
        tracks = [r["track"] for r in recs["gallery"]]
        self.tracks = tracks if any(t is not None for t in tracks) else None
        self.truth = ground_truth(
            [_Rec(r) for r in recs["query"]], [_Rec(r) for r in recs["gallery"]]
        )


class _Rec:
    def __init__(self, r: dict[str, Any]) -> None:
        self.vehicle_id, self.camera = r["vehicle_id"], r["camera"]


def diagnose(run: Path, synth_real: Path) -> dict[str, Any]:
    """Head accuracy on the test images and the metadata step with three kinds of metadata."""
    config = load_config(run / "config.yaml")
    rec = _Records(run)
    names_q, names_g = rec.names["query"], rec.names["gallery"]
    truth_cls = _true_classes(synth_real)
    members = list(config.pipeline.ensemble)
    features = {m: load_pair(run / "features" / m, names_q, names_g) for m in members}
    attr_dir = run / "attributes" / "features"

    heads: dict[str, Any] = {}
    kinds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {
        "penultimate features (paper)": {},
        "predicted probabilities": {},
        "true labels (oracle)": {},
    }
    for head in HEADS:
        probs = load_pair(attr_dir / f"{head}_probs", names_q, names_g)
        kinds["penultimate features (paper)"][head] = load_pair(attr_dir / head, names_q, names_g)
        kinds["predicted probabilities"][head] = probs
        classes = len(ATTRIBUTE_CLASSES[head])
        true = [
            np.array([truth_cls[head][int(v)] for v in rec.ids[s]]) for s in ("query", "gallery")
        ]
        onehot = []
        for t in true:
            m = np.zeros((len(t), classes), np.float32)
            known = t != IGNORE_INDEX
            m[np.flatnonzero(known), t[known]] = 1.0
            onehot.append(m)
        kinds["true labels (oracle)"][head] = (onehot[0], onehot[1])
        t_all = np.concatenate(true)
        p_all = np.concatenate([probs[0].argmax(1), probs[1].argmax(1)])
        known = t_all != IGNORE_INDEX
        counts = np.bincount(t_all[known], minlength=classes)
        heads[head] = {
            "test_images": int(known.sum()),
            "accuracy": float((p_all[known] == t_all[known]).mean()),
            "majority_class": ATTRIBUTE_CLASSES[head][int(counts.argmax())],
            "majority_accuracy": float(counts.max() / max(1, counts.sum())),
            "predicted_classes": {
                ATTRIBUTE_CLASSES[head][int(c)]: int(n)
                for c, n in zip(*np.unique(p_all[known], return_counts=True), strict=True)
            },
            "true_classes": {ATTRIBUTE_CLASSES[head][c]: int(n) for c, n in enumerate(counts) if n},
        }

    base = config.retrieval.model_copy(update={"track_average": False})
    grid: dict[str, dict[str, float]] = {}
    reference = None
    for kind, attrs in kinds.items():
        grid[kind] = {}
        for gamma in GAMMAS:
            settings = RetrievalConfig.model_validate(
                {**base.model_dump(), "gamma_type": gamma, "gamma_colour": gamma}
            )
            if gamma == 0.0 and reference is not None:
                grid[kind]["0"] = reference
                continue
            chain = RetrievalChain(settings, features, attributes=attrs if gamma else None)
            result = score(chain.final_distances(), rec.truth, settings)["mAP"]
            grid[kind][f"{gamma:g}"] = result
            if gamma == 0.0:
                reference = result
    return {"run": str(run), "heads": heads, "metadata_mAP@100": grid, "gammas": list(GAMMAS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--synth", type=Path, required=True, help="the vreid synth root")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [diagnose(run, args.synth / "real") for run in args.runs]
    for r in results:
        print(f"\n{r['run']}")
        for head, h in r["heads"].items():
            print(
                f"  {head:5s} head on the {h['test_images']} test images: accuracy "
                f"{100 * h['accuracy']:.1f} %, majority class '{h['majority_class']}' "
                f"{100 * h['majority_accuracy']:.1f} %; predicted {h['predicted_classes']}"
            )
        print("  ensemble + re-ranking + metadata, mAP@100 % by γ (γ_type = γ_colour):")
        print("  " + f"{'metadata from':32s}" + "".join(f"{g:>7g}" for g in r["gammas"]))
        for kind, row in r["metadata_mAP@100"].items():
            print("  " + f"{kind:32s}" + "".join(f"{100 * v:7.1f}" for v in row.values()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
