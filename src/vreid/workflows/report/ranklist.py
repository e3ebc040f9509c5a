"""Rank-list pictures: each row is a query followed by its top-k gallery images.

True matches are framed green, false ones red (grey when the ground truth is unknown); the query is
framed blue. Under each gallery image a strip shows its rank, camera and track (and, when asked,
its distance and its file name); consecutive images of the same track share the strip colour and a
dark bar separates different tracks, so track boundaries are visible at a glance. Captions use a
:data:`CAPTION_PX` pixel font: digits 13 px high at the picture's own size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vreid.core.artefacts import atomic_path
from vreid.core.errors import DatasetError
from vreid.data.images import open_image

GREEN = (40, 170, 60)
RED = (215, 40, 40)
BLUE = (40, 90, 220)
TRACK_COLOURS = [(235, 235, 235), (200, 215, 240), (245, 225, 190), (215, 240, 210)]
CAPTION_PX = 18
"""Font size of the captions (pixels of the picture; its digits are 13 px high)."""


class RecordLike(Protocol):
    """What a rank list needs of an image record (``vreid.data.ImageRecord`` fits)."""

    path: Path
    name: str
    vehicle_id: int | None
    camera: int | None
    track: int | None


def average_precision_per_query(
    distmat: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray, *, block: int = 256
) -> np.ndarray:
    """Full-length average precision of each query (q,); NaN for queries without a true match.

    ``distmat`` (q, g): smaller is closer. Ties are broken by gallery index (stable sort).
    """
    distmat = np.asarray(distmat)
    query_ids = np.asarray(query_ids)
    gallery_ids = np.asarray(gallery_ids)
    ap = np.full(distmat.shape[0], np.nan)
    ranks = np.arange(1, distmat.shape[1] + 1, dtype=np.float64)
    for start in range(0, distmat.shape[0], block):
        rows = distmat[start : start + block]
        order = np.argsort(rows, axis=1, kind="stable")
        matches = gallery_ids[order] == query_ids[start : start + block, None]
        hits = np.cumsum(matches, axis=1)
        n_true = hits[:, -1]
        precision_sum = np.where(matches, hits / ranks, 0.0).sum(axis=1)
        valid = n_true > 0
        ap[start : start + block][valid] = precision_sum[valid] / n_true[valid]
    return ap


def select_best_and_worst(ap: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    """Indices of the ``ceil(count/2)`` best and ``floor(count/2)`` worst queries by AP (NaN skipped)."""
    valid = np.flatnonzero(~np.isnan(ap))
    if count <= 0 or valid.size == 0:
        return [], []
    order = valid[np.argsort(-ap[valid], kind="stable")]
    n_best = min((count + 1) // 2, order.size)
    best = order[:n_best].tolist()
    rest = [i for i in order[::-1].tolist() if i not in set(best)]
    worst = rest[: count // 2]
    return best, worst


def _thumbnail(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image letter-boxed into ``size`` (w, h); a grey placeholder when unreadable."""
    canvas = Image.new("RGB", size, (128, 128, 128))
    try:
        img = open_image(path, target=size)
        scale = min(size[0] / img.width, size[1] / img.height)
        new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(new, Image.Resampling.BILINEAR)
        canvas.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    except DatasetError:
        ImageDraw.Draw(canvas).text((4, 4), "unreadable", fill=(255, 255, 255))
    return canvas


def draw_rank_list(
    distmat: np.ndarray,
    query_indices: Sequence[int],
    queries: Sequence[RecordLike],
    gallery: Sequence[RecordLike],
    path: str | os.PathLike[str],
    *,
    top: int = 10,
    thumb_size: tuple[int, int] = (128, 96),
    labels: Sequence[str] | None = None,
    show_distance: bool = False,
    show_name: bool = False,
) -> Path:
    """Draw one row per query index: the query, a gap, then its ``top`` nearest gallery images.

    ``distmat`` (q, g) over ``queries`` × ``gallery``. ``labels`` (one per row) is written at the
    left of each row, e.g. ``"AP 0.93"``. Without vehicle ids, frames are grey. Each gallery
    image's caption holds its rank, camera and track where known, with ``show_distance`` its
    distance (``d0.412``) and with ``show_name`` a second line with its name (shortened from the
    left to fit: ``…c002_0042.jpg``).
    """
    distmat = np.asarray(distmat)
    tw, th = thumb_size
    font = ImageFont.load_default(size=CAPTION_PX)
    line = CAPTION_PX + 4
    border, pad, gap = 4, 4, 18
    strip = line * (2 if show_name else 1) + 2
    label_texts = [f"q{qi + 1}" for qi in query_indices] + list(labels or [])
    left = max(70, 12 + max((round(font.getlength(t)) for t in label_texts), default=0))
    cell_w, cell_h = tw + 2 * border + pad, th + 2 * border + strip + pad
    width = left + cell_w * (top + 1) + gap
    height = max(1, len(query_indices)) * cell_h + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, qi in enumerate(query_indices):
        y = pad + row * cell_h
        q = queries[qi]
        text = labels[row] if labels is not None else ""
        draw.text((4, y + th // 2 - line), f"q{qi + 1}", fill=(0, 0, 0), font=font)
        if text:
            draw.text((4, y + th // 2 + 2), text, fill=(0, 0, 0), font=font)
        _paste_framed(sheet, _thumbnail(q.path, thumb_size), (left, y), BLUE, border)
        _strip(
            draw,
            (left, y + th + 2 * border),
            tw + 2 * border,
            strip,
            (220, 220, 255),
            ["query", _fit(q.name, font, tw + 2 * border - 6)] if show_name else ["query"],
            font,
        )
        order = np.argsort(distmat[qi], kind="stable")[:top]
        prev_track: Any = object()
        track_colour = 0
        for rank, gi in enumerate(order.tolist()):
            g = gallery[gi]
            x = left + cell_w * (rank + 1) + gap
            if q.vehicle_id is None or g.vehicle_id is None:
                colour = (150, 150, 150)
            else:
                colour = GREEN if g.vehicle_id == q.vehicle_id else RED
            _paste_framed(sheet, _thumbnail(g.path, thumb_size), (x, y), colour, border)
            # without track ids there is nothing to separate
            new_track = g.track is not None and g.track != prev_track
            if new_track and rank > 0:
                track_colour += 1
                bx = x - pad // 2 - 1
                draw.rectangle([bx - 1, y, bx + 1, y + cell_h - pad], fill=(30, 30, 30))
            prev_track = g.track
            cam = f"c{g.camera}" if g.camera is not None else ""
            trk = f"t{g.track}" if g.track is not None else ""
            dist = f"d{distmat[qi, gi]:.3f}" if show_distance else ""
            texts = [" ".join(t for t in (f"{rank + 1}", cam, trk, dist) if t)]
            if show_name:
                texts.append(_fit(g.name, font, tw + 2 * border - 6))
            _strip(
                draw,
                (x, y + th + 2 * border),
                tw + 2 * border,
                strip,
                TRACK_COLOURS[track_colour % len(TRACK_COLOURS)],
                texts,
                font,
            )
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return path


def _paste_framed(
    sheet: Image.Image,
    img: Image.Image,
    xy: tuple[int, int],
    colour: tuple[int, int, int],
    border: int,
) -> None:
    x, y = xy
    ImageDraw.Draw(sheet).rectangle(
        [x, y, x + img.width + 2 * border - 1, y + img.height + 2 * border - 1], fill=colour
    )
    sheet.paste(img, (x + border, y + border))


def _strip(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    width: int,
    height: int,
    colour: tuple[int, int, int],
    texts: Sequence[str],
    font: Any,
) -> None:
    x, y = xy
    draw.rectangle([x, y, x + width - 1, y + height - 1], fill=colour)
    for i, text in enumerate(texts):
        draw.text((x + 3, y + 1 + i * (CAPTION_PX + 4)), text, fill=(0, 0, 0), font=font)


def _fit(text: str, font: Any, width: int) -> str:
    """``text``, or its end after an ellipsis (``…0042.jpg``), short enough for ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    for start in range(1, len(text)):
        short = "…" + text[start:]
        if font.getlength(short) <= width:
            return short
    return "…"
