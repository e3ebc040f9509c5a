"""The HTML report of a run: ``build_report(run_dir) -> run_dir/report/index.html``.

The page is self-contained (inline CSS, no scripts, images as relative links inside ``report/``), so
it opens from disk. Everything derived from user input (names, paths, config values) is escaped.

What it reads from the run directory (all optional except ``metrics.json``; missing parts are
left out of the page with a note):

- ``metrics.json`` — ``{row: evaluate-dict}``, each with ``mAP``, ``cmc``, ``mINP``,
  ``num_valid_queries`` (``retrieval.protocol`` at ``retrieval.top``, AIC: top 100) and ``full``
  (``mAP``, ``mINP`` over the whole gallery); ``vreid rank`` writes the same table.
- ``records.json`` — ``{"query": [...], "gallery": [...]}`` (``path``, ``name``, ``vehicle_id``,
  ``camera``, ``track``) and ``distances/<row>.npy`` (q, g) for the rank lists.
- ``models/<model>/<phase>/`` — training runs (TensorBoard events or ``history.json``).
- ``attributes/eval.json`` — ``{head: {"classes", "confusion", "accuracy", "num_images"}}``.
- ``data_roots.json`` and, for cropped sets, their ``crop_report.json`` / ``crop_uncropped.txt``.
- ``dataset_stats.json``, ``config.yaml``, ``versions.json``, ``manifests/<stage>.json`` (times).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import read_json, read_npy, write_text_atomic
from vreid.core.config import INFORMATIONAL_KEYS, flat_keys
from vreid.core.errors import VreidError
from vreid.engine.attributes import no_better_than_majority
from vreid.workflows.report import plots, ranklist

# Rows of the paper's Table 2, in order: (metrics.json key, label shown).
TABLE_ROWS: list[tuple[str, str]] = [
    ("colour_histogram", "Colour-histogram baseline (floor)"),
    ("untrained", "Untrained GLAMOR (random weights)"),
    ("resnet50", "ResNet-50"),
    ("resnext101_32x8d", "ResNeXt101 32×8d"),
    # the other plain-trunk baselines (models.common.TRUNKS), before the paper's model
    ("resnet18", "ResNet-18"),
    ("resnet34", "ResNet-34"),
    ("resnet101", "ResNet-101"),
    ("resnet152", "ResNet-152"),
    ("resnext50_32x4d", "ResNeXt50 32×4d"),
    ("resnext101_64x4d", "ResNeXt101 64×4d"),
    ("wide_resnet50_2", "Wide ResNet-50-2"),
    ("wide_resnet101_2", "Wide ResNet-101-2"),
    ("glamor", "GLAMOR"),
    ("counter_glamor", "Counter GLAMOR"),
    ("ensemble", "Ensemble (pipeline.ensemble, retrieval.ensemble_weights)"),
    ("ensemble+rerank", "+ re-ranking"),
    ("ensemble+rerank+metadata", "+ metadata"),
    ("ensemble+rerank+metadata+tracks", "+ track averaging"),
    ("ensemble+rerank+tracks", "+ track averaging (no metadata)"),
    ("ensemble+metadata", "+ metadata (no re-ranking)"),
    ("ensemble+metadata+tracks", "+ track averaging (no re-ranking)"),
    ("ensemble+tracks", "Ensemble + track averaging"),
]
# Preferred row for the rank lists: the last of these that has a distance matrix (the distances
# stage keeps only the rows of the run's configuration, so this is its final row).
RANKLIST_ROWS = [
    "glamor",
    "ensemble",
    "ensemble+metadata",
    "ensemble+rerank",
    "ensemble+rerank+metadata",
    "ensemble+tracks",
    "ensemble+metadata+tracks",
    "ensemble+rerank+tracks",
    "ensemble+rerank+metadata+tracks",
]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1250px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:bold}img{max-width:100%;border:1px solid #ddd}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}.note{color:#666}
.wide{overflow-x:auto}.wide img{max-width:none}
"""


@dataclass
class _Section:
    title: str
    body: str


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _read_json(path: Path, kind: type = dict) -> Any:
    try:
        return read_json(path, kind=kind)
    except VreidError as err:
        raise VreidError(f"{err}; re-run the stage that wrote it") from None


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """``metrics.json`` checked for the shape every reader relies on: ``{row: {"mAP": number,
    "cmc": [numbers], …}}``; anything else is a :class:`VreidError` naming the file and row."""
    metrics = _read_json(path)
    for row, entry in metrics.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("mAP"), int | float)
            and isinstance(entry.get("cmc", []), list)
            and all(isinstance(x, int | float) for x in entry.get("cmc", []))
            and isinstance(entry.get("full", {}), dict)
        )
        if not ok:
            raise VreidError(
                f"{path}: row {row!r} is not a metrics entry (needs a number 'mAP' and a list "
                "'cmc'); re-run the metrics stage (vreid pipeline … --from metrics)"
            )
    return metrics


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}"


def row_label(key: str) -> str:
    """Display name of a metrics.json row (unknown keys are shown as they are)."""
    return dict(TABLE_ROWS).get(key, key)


def results_table_rows(
    metrics: dict[str, Any], labels: dict[str, str] | None = None
) -> list[tuple[str, str, list[str]]]:
    """``(key, label, [mAP@top, mAP full, R1, R5, R10, mINP])`` per row present, in table order;
    ``labels`` (a run's ``distances/rows.json``) name the rows by what was built."""
    labels = labels or {}
    keys = [k for k, _ in TABLE_ROWS if k in metrics]
    keys += [k for k in metrics if k not in dict(TABLE_ROWS)]
    out = []
    for key in keys:
        m = metrics[key]
        cmc = list(m.get("cmc", []))
        full = m.get("full", {})

        def rank(k: int, cmc: list[Any] = cmc) -> Any:
            return cmc[k - 1] if len(cmc) >= k else None

        out.append(
            (
                key,
                labels.get(key) or row_label(key),
                [
                    _pct(m.get("mAP")),
                    _pct(full.get("mAP")),
                    _pct(rank(1)),
                    _pct(rank(5)),
                    _pct(rank(10)),
                    _pct(full.get("mINP", m.get("mINP"))),
                ],
            )
        )
    return out


def _table(headers: list[str], rows: list[list[str]], *, numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_esc(c)}</td>' if i >= numeric_from else f"<td>{_esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(src: str, alt: str, *, wide: bool = False) -> str:
    """An image paragraph; ``wide`` ones are shown at their own size (scrolling sideways) so that
    their captions keep their pixel size."""
    cls = ' class="wide"' if wide else ""
    return f'<p{cls}><img src="{_esc(src)}" alt="{_esc(alt)}"></p>'


def map_header(metrics: dict[str, Any]) -> str:
    """The first mAP column's name, from what the metrics were computed with."""
    first = next(iter(metrics.values()), {})
    protocol, top = first.get("protocol", "aic"), first.get("max_rank", 100)
    return {"aic": f"mAP (AIC, top {top})", "veri": "mAP (VeRi protocol)"}.get(
        protocol, f"mAP (top {top})"
    )


#: The paper's own Table 2 (Truong et al. 2020, AIC20 Track 2 test set, their data and GPUs).
PAPER_TABLE = [
    ("ResNet-50", "29.4", "45.9"),
    ("ResNeXt101", "32.0", "48.8"),
    ("GLAMOR + Counter GLAMOR + metadata re-ranking (theirs)", "37.3", "52.6"),
]


def _results_section(metrics: dict[str, Any], labels: dict[str, str] | None = None) -> _Section:
    rows = results_table_rows(metrics, labels)
    headers = ["Method", map_header(metrics), "mAP (full)", "Rank-1", "Rank-5", "Rank-10", "mINP"]
    valid = {m.get("num_valid_queries") for m in metrics.values()} - {None}
    note = (
        '<p class="note">Percentages. The first mAP: AP over the top ranks divided by the number '
        "of true matches (AIC); full: AP over the whole gallery. Queries evaluated: "
        f"{_esc(', '.join(str(v) for v in sorted(valid)) or 'n/a')}.</p>"
    )
    body = _table(headers, [[label, *vals] for _, label, vals in rows]) + note
    body += (
        "<h3>For reference: the paper's Table 2, on AIC20 (not this run's data)</h3>"
        + _table(["Method (paper)", "mAP", "Rank-1"], [list(r) for r in PAPER_TABLE])
        + '<p class="note">Truong, Dang, Ye, Nguyen, Mei, "Image-based Vehicle Re-identification '
        'Model with Adaptive Attention Modules and Metadata Re-ranking", AI City Challenge 2020 '
        "(CVPR Workshops), arXiv:2007.01818; GLAMOR: Suprem &amp; Pu, arXiv:2002.02256; "
        "k-reciprocal re-ranking: Zhong et al., CVPR 2017. Their numbers come from their data, "
        "ImageNet weights and GPU budget; they are not comparable with the rows above.</p>"
    )
    return _Section("Results (Table 2 of the paper, on this run's data)", body)


def run_labels(run_dir: Path) -> dict[str, str]:
    """The row labels a pipeline run wrote (``distances/rows.json``), if any."""
    f = run_dir / "distances" / "rows.json"
    return dict(_read_json(f).get("labels", {})) if f.is_file() else {}


# What each step of a retrieval-chain row name adds (``ensemble+rerank+metadata+tracks``).
_STEP_NAMES = {"rerank": "re-ranking", "metadata": "metadata", "tracks": "track averaging"}


def curve_label(key: str, labels: dict[str, str] | None = None) -> str:
    """A metrics row's name that stands on its own (a legend entry): the row label of the results
    table (``labels`` of :func:`run_labels`, else :func:`row_label`), a chain row spelled out from
    its base row, e.g. ``"Ensemble (GLAMOR + Counter GLAMOR, 1:1) + re-ranking + metadata"``."""
    labels = labels or {}
    if key in labels or "+" not in key:
        return labels.get(key) or row_label(key)
    base, *steps = key.split("+")
    return " + ".join([curve_label(base, labels), *(_STEP_NAMES.get(s, s) for s in steps)])


def cmc_curves(metrics: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The CMC figure's curves: ``{legend entry (:func:`curve_label`): metrics row}`` in the
    results table's order."""
    return {curve_label(key, labels): metrics[key] for key, _, _ in results_table_rows(metrics)}


def _cmc_section(metrics: dict[str, Any], out: Path, labels: dict[str, str]) -> _Section:
    curves = cmc_curves(metrics, labels)
    path = plots.plot_cmc(curves, out / "cmc.png", title="CMC (AIC protocol)")
    return _Section("CMC curves", _img(path.name, "CMC curves"))


def _training_section(run_dir: Path, out: Path) -> _Section | None:
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
    models = run_dir / "models"
    if models.is_dir():
        for phase_dir in sorted(p for p in models.glob("*/*") if p.is_dir()):
            scalars = plots.read_scalars(phase_dir)
            if scalars:
                runs[f"{phase_dir.parent.name}/{phase_dir.name}"] = scalars
    attr = run_dir / "attributes"
    if attr.is_dir():
        for d in [attr, *sorted(p for p in attr.iterdir() if p.is_dir())]:
            scalars = plots.read_scalars(d)
            if scalars:
                runs[f"attributes/{d.name}" if d != attr else "attributes"] = scalars
    if not runs:
        return None
    parts = []
    model_names = sorted({label.split("/")[0] for label in runs})
    for name in model_names:
        subset = {k: v for k, v in runs.items() if k.split("/")[0] == name}
        path = plots.plot_training_curves(subset, out / f"training_{_safe(name)}.png")
        if path is not None:
            parts.append(f"<h3>{_esc(name)}</h3>" + _img(path.name, f"training curves of {name}"))
    return _Section("Training curves", "".join(parts))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


@dataclass
class _Rec:
    path: Path
    name: str
    vehicle_id: int | None
    camera: int | None
    track: int | None


def _records(run_dir: Path) -> tuple[list[_Rec], list[_Rec]] | None:
    f = run_dir / "records.json"
    if not f.is_file():
        return None
    data = _read_json(f)

    def conv(rows: list[dict[str, Any]]) -> list[_Rec]:
        return [
            _Rec(
                Path(r["path"]),
                r.get("name") or Path(r["path"]).name,
                r.get("vehicle_id"),
                r.get("camera"),
                r.get("track"),
            )
            for r in rows
        ]

    return conv(data.get("query", [])), conv(data.get("gallery", []))


def _ranklist_section(run_dir: Path, out: Path, count: int) -> _Section | None:
    recs = _records(run_dir)
    row = next(
        (r for r in reversed(RANKLIST_ROWS) if (run_dir / "distances" / f"{r}.npy").is_file()),
        None,
    )
    if recs is None or row is None or count <= 0:
        return None
    queries, gallery = recs
    distmat = read_npy(run_dir / "distances" / f"{row}.npy")
    if distmat.shape != (len(queries), len(gallery)):
        raise VreidError(
            f"{run_dir / 'distances' / (row + '.npy')}: shape {distmat.shape} does not match "
            f"records.json ({len(queries)} queries, {len(gallery)} gallery); re-run with --from distances"
        )
    qids = np.array([-1 if r.vehicle_id is None else r.vehicle_id for r in queries])
    gids = np.array([-2 if r.vehicle_id is None else r.vehicle_id for r in gallery])
    ap = ranklist.average_precision_per_query(distmat, qids, gids)
    best, worst = ranklist.select_best_and_worst(ap, count)
    if not best and not worst:
        best = list(range(min(count, len(queries))))
    parts = [
        f'<p class="note">Ranking: <b>{_esc(row_label(row))}</b>. Query framed blue, true matches '
        "green, false red. Under each image: rank, camera, track; a dark bar marks a new track and "
        "the strip colour changes with it.</p>"
    ]
    for title, idx in (("Best queries", best), ("Worst queries", worst)):
        if not idx:
            continue
        name = f"ranklist_{title.split()[0].lower()}.png"
        labels = [f"AP {ap[i]:.2f}" if not np.isnan(ap[i]) else "" for i in idx]
        ranklist.draw_rank_list(distmat, idx, queries, gallery, out / name, labels=labels)
        parts.append(f"<h3>{_esc(title)}</h3>" + _img(name, title, wide=True))
    return _Section("Rank lists", "".join(parts))


def _attribute_section(run_dir: Path, out: Path) -> _Section | None:
    f = run_dir / "attributes" / "eval.json"
    if not f.is_file():
        return None
    data = _read_json(f)
    parts = []
    rows = []
    weak = []
    for head, ev in data.items():
        acc, majority, n = ev.get("accuracy"), ev.get("majority_baseline"), ev.get("num_images")
        flat = no_better_than_majority(acc, majority, n)
        if flat:
            weak.append(f"{head} ({_pct(acc)} % vs {_pct(majority)} %)")
        rows.append(
            [
                head,
                _pct(acc),
                _pct(majority),
                str(n if n is not None else ""),
                "–"
                if acc is None or majority is None
                else "no better than the majority class"
                if flat
                else "better",
            ]
        )
    headers = ["Head", "Accuracy (%)", "Majority class (%)", "Images", "vs always the majority"]
    parts.append(_table(headers, rows, numeric_from=1))
    parts.append(
        '<p class="note">Majority class: the accuracy of always answering the most frequent class '
        "of these test images. A head counts as no better when its accuracy is not above it by "
        "at least two standard errors of that rate on this many images (and two points).</p>"
    )
    if weak:
        parts.append(
            f"<p><b>Warning:</b> {_esc(', '.join(weak))}: no better than always guessing the "
            "majority class; its features carry little of that attribute, and the metadata "
            "re-ranking's weight on it (retrieval.gamma_type / gamma_colour) adds little.</p>"
        )
    if any("source" in ev for ev in data.values()):
        src = {str(ev.get("source")) for ev in data.values()}
        parts.append(f'<p class="note">Evaluated on: {_esc(", ".join(sorted(src)))}.</p>')
    for head, ev in data.items():
        if "confusion" in ev and "classes" in ev:
            path = plots.plot_confusion(
                np.asarray(ev["confusion"]),
                ev["classes"],
                out / f"confusion_{_safe(head)}.png",
                title=f"{head} (rows: true)",
            )
            parts.append(f"<h3>{_esc(head)}</h3>" + _img(path.name, f"{head} confusion matrix"))
    return _Section("Attributes (colour and type)", "".join(parts))


def _stats_section(run_dir: Path) -> _Section | None:
    f = run_dir / "dataset_stats.json"
    if not f.is_file():
        return None
    data = _read_json(f)
    parts = []
    for dataset, splits in data.items():
        rows = [
            [
                split,
                str(s.get("images", "")),
                str(s.get("ids", "")),
                str(s.get("cameras", "")),
                str(s.get("tracks", "")),
            ]
            for split, s in splits.items()
            if isinstance(s, dict)
        ]
        root = splits.get("root", "") if isinstance(splits, dict) else ""
        parts.append(
            f"<h3>{_esc(dataset)}</h3><p class='note'>{_esc(root)}</p>"
            + _table(["Split", "Images", "Ids", "Cameras", "Tracks"], rows)
        )
    return _Section("Dataset statistics", "".join(parts))


def _crop_section(run_dir: Path) -> _Section | None:
    """What the detector did, when the run cropped its datasets (``crop_report.json`` per set)."""
    f = run_dir / "data_roots.json"
    if not f.is_file():
        return None
    roots = _read_json(f)
    rows, kept = [], []
    seen: set[str] = set()
    for label, key in (("real", "real"), ("simulation", "sim"), ("attributes", "attributes")):
        root = roots.get(key)
        if not root or root in seen or not (Path(root) / "crop_report.json").is_file():
            continue
        seen.add(root)
        rep = _read_json(Path(root) / "crop_report.json")
        rows.append(
            [
                label,
                str(rep.get("detector", "")),
                str(rep.get("weights", "")),
                str(rep.get("images", "")),
                str(rep.get("cropped", "")),
                str(rep.get("uncropped", "")),
            ]
        )
        listed = Path(root) / "crop_uncropped.txt"
        if listed.is_file():
            names = listed.read_text(encoding="utf-8").split()
            if names:
                more = f" and {len(names) - 20} more" if len(names) > 20 else ""
                kept.append(f"{label}: {', '.join(names[:20])}{more}")
    if not rows:
        return None
    body = _table(
        ["Set", "Detector", "Weights", "Images", "Cropped", "Kept whole"], rows, numeric_from=3
    )
    note = "Images without a vehicle detection are kept whole"
    body += f'<p class="note">{_esc(note)}{": " if kept else "."}{_esc("; ".join(kept))}</p>'
    return _Section("Cropping", body)


def _tune_section(run_dir: Path) -> _Section | None:
    """The retrieval settings tuned on validation identities, and the validation curve."""
    f = run_dir / "tune" / "tune.json"
    if not f.is_file():
        return None
    data = _read_json(f)
    chosen = data.get("chosen", {})
    val = data.get("validation", {})
    metric = str(data.get("metric", "mAP"))
    body = (
        f"<p>Chosen on {_esc(val.get('ids', '?'))} training identities held out of training "
        f"({_esc(val.get('queries', '?'))} queries, {_esc(val.get('gallery', '?'))} gallery "
        f"images; the test split is never used): validation {_esc(metric)} "
        f"{_pct(data.get('default_score'))} with the config's values → "
        f"{_pct(data.get('best_score'))} with these.</p>"
    )
    body += _table(["Setting", "Chosen"], [[k, _esc(v)] for k, v in chosen.items()])
    rows = [
        [str(c.get("setting")), _esc(c.get("value")), _pct(c.get("score"))]
        for c in data.get("curve", [])
    ]
    if rows:
        body += "<h3>Validation curve</h3>" + _table(
            ["Setting", "Value", f"Validation {metric}"], rows, numeric_from=2
        )
    return _Section("Post-processing tuned on validation identities", body)


def _history_section(run_dir: Path) -> _Section | None:
    """Every configuration this run directory has finished (``results/<key>/``), side by side:
    the settings where they differ from this run's, and their final row."""
    import yaml

    folders = sorted(p for p in (run_dir / "results").glob("*") if (p / "metrics.json").is_file())
    if len(folders) < 2 or not (run_dir / "config.yaml").is_file():
        return None
    current = flat_keys(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    rows = []
    for folder in sorted(folders, key=lambda p: (p / "metrics.json").stat().st_mtime):
        cfg_file = folder / "config.yaml"
        other = (
            flat_keys(yaml.safe_load(cfg_file.read_text(encoding="utf-8")))
            if cfg_file.is_file()
            else {}
        )
        diff = [
            f"{k}={other.get(k)}"
            for k in sorted(set(current) | set(other))
            if k not in INFORMATIONAL_KEYS and other.get(k) != current.get(k)
        ]
        metrics = read_metrics(folder / "metrics.json")
        rows_file = folder / "rows.json"
        final = _read_json(rows_file).get("final") if rows_file.is_file() else None
        if final not in metrics:
            final = next(reversed(metrics), None)
        m = metrics.get(final, {}) if final else {}
        cmc = m.get("cmc") or [None]
        rows.append(
            [
                folder.name,
                "; ".join(diff) or "this run's settings",
                row_label(final) if final else "–",
                _pct(m.get("mAP")),
                _pct(cmc[0]),
            ]
        )
    body = _table(
        ["Results", "Settings (where they differ)", "Row", "mAP", "R1"], rows, numeric_from=3
    )
    body += (
        '<p class="note">Each configuration run in this folder keeps its metrics.json, '
        "track2.txt and config.yaml under results/&lt;key&gt;/.</p>"
    )
    return _Section("Runs in this folder", body)


def _run_section(run_dir: Path) -> _Section:
    parts = []
    manifests = [
        m
        for m in (
            sorted((run_dir / "manifests").glob("*.json"))
            if (run_dir / "manifests").is_dir()
            else []
        )
        if not m.name.endswith(".started.json")  # markers of stages in progress
    ]
    current = run_dir / "stages.json"  # the stages of the run's present config
    if current.is_file():
        wanted = set(_read_json(current, list))
        manifests = [m for m in manifests if m.stem in wanted]
    if manifests:
        rows = []
        infos = [_read_json(m) for m in manifests]
        infos.sort(key=lambda m: m.get("order", 0))
        for m in infos:
            rows.append(
                [
                    str(m.get("stage", "")),
                    f"{float(m.get('seconds', 0)):.1f}",
                    str(m.get("finished", "")),
                ]
            )
        total = sum(float(m.get("seconds", 0)) for m in infos)
        rows.append(["total", f"{total:.1f}", ""])
        parts.append("<h3>Stage times</h3>" + _table(["Stage", "Seconds", "Finished (UTC)"], rows))
    versions = run_dir / "versions.json"
    if versions.is_file():
        v = _read_json(versions)
        parts.append(
            "<h3>Versions</h3>"
            + _table(["Component", "Version"], [[k, str(x)] for k, x in v.items()], numeric_from=9)
        )
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        parts.append(
            "<h3>Resolved config</h3><pre>" + _esc(cfg.read_text(encoding="utf-8")) + "</pre>"
        )
    return _Section("Run", "".join(parts))


def build_report(run_dir: str | os.PathLike[str], *, num_rank_lists: int | None = None) -> Path:
    """Write ``run_dir/report/index.html`` (and its PNGs) from the run's artefacts; return its path.

    ``num_rank_lists``: sample queries shown (half best, half worst); default: the run's
    ``report.num_rank_lists`` from ``config.yaml``, else 8.
    """
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise VreidError(
            f"{metrics_file}: not found; a report needs a finished metrics stage "
            "(run `vreid pipeline` on data with query/gallery ground truth)"
        )
    metrics = read_metrics(metrics_file)
    if num_rank_lists is None:
        num_rank_lists = 8
        cfg = run_dir / "config.yaml"
        if cfg.is_file():
            import yaml

            tree = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
            num_rank_lists = int(tree.get("report", {}).get("num_rank_lists", 8))
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections: list[_Section | None] = [
        _results_section(metrics, run_labels(run_dir)),
        _cmc_section(metrics, out, run_labels(run_dir)),
        _ranklist_section(run_dir, out, num_rank_lists),
        _training_section(run_dir, out),
        _attribute_section(run_dir, out),
        _stats_section(run_dir),
        _crop_section(run_dir),
        _tune_section(run_dir),
        _history_section(run_dir),
        _run_section(run_dir),
    ]
    present = [s for s in sections if s is not None]
    toc = "".join(f'<li><a href="#s{i}">{_esc(s.title)}</a></li>' for i, s in enumerate(present))
    body = "".join(f'<h2 id="s{i}">{_esc(s.title)}</h2>{s.body}' for i, s in enumerate(present))
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>vreid report: {_esc(run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>vreid report: {_esc(run_dir.name)}</h1><ul>{toc}</ul>{body}</body></html>\n"
    )
    return write_text_atomic(out / "index.html", page)
