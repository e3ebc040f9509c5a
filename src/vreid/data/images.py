"""The one way vreid decodes an image file: :func:`open_image`.

Every reader of image files (the torch Datasets, cropping, calibration, rank-list sheets,
``vreid data check``) goes through it, so every one of them keeps the same promises:

* **a pixel limit**: an image whose header declares more than ``max_pixels`` pixels (a
  "decompression bomb": a 30000×30000 PNG is a few MB on disk and 2.7 GB decoded) is refused
  before it is decoded, with a :class:`ImageReadError` naming the file and its size;
* **no more pixels than needed**: with ``target=(width, height)`` a large image (over
  :data:`REDUCE_ABOVE` pixels) is reduced while it is read (JPEG: ``Image.draft``, a reduced-scale DCT decode; other formats: ``Image.reduce``)
  to the smallest size that is still at least ``target`` in both dimensions;
* **RGB out**, file closed; anything Pillow cannot decode (truncated, not an image, a broken
  header) is a :class:`ImageReadError` naming the file and what is wrong, never a Pillow
  traceback. The error pickles with its message, so a DataLoader worker re-raises it as the same
  one line (:func:`vreid.data.image_datasets.worker_errors`).
"""

from __future__ import annotations

import os
import re
import warnings

from PIL import Image

from vreid.core.errors import DatasetError

MAX_PIXELS = 2 * 89_478_485
"""Largest image accepted (width × height): Pillow's own decompression-bomb limit
(``2 × Image.MAX_IMAGE_PIXELS``, about 179 megapixels, 537 MB decoded as RGB)."""

SOURCE_SIZE = "vreid_source_size"
"""Key of ``image.info`` holding the (width, height) of the file before any reduction."""


_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "RGBa", "La", "I", "F", "CMYK"})


class ImageReadError(DatasetError):
    """An image file that cannot be decoded (or is over the pixel limit).

    ``path`` and ``reason`` are the parts of the one-line message.
    """

    def __init__(self, message: str, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message


def _fail(path: str | os.PathLike[str], reason: str, hint: str = "") -> ImageReadError:
    hint = hint or (
        "replace or remove the file (`vreid data check ROOT` lists every unreadable image)"
    )
    return ImageReadError(f"{path}: {reason}; {hint}", str(path), reason)


REDUCE_ABOVE = 8_000_000
"""Images of more pixels than this are reduced on read when the caller gives a ``target``; smaller
ones are decoded whole, so ordinary images give exactly the numbers of a full decode (a path and
the same picture passed as an array give the same features)."""


def _reduction(size: tuple[int, int], target: tuple[int, int] | None) -> int:
    """The largest integer factor that keeps ``size`` at least ``target`` in both dimensions
    (1 for images of at most :data:`REDUCE_ABOVE` pixels)."""
    if target is None or size[0] * size[1] <= REDUCE_ABOVE:
        return 1
    tw, th = max(1, int(target[0])), max(1, int(target[1]))
    return max(1, min(size[0] // tw, size[1] // th))


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    target: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``path`` as an RGB image under the pixel limit, reduced towards ``target``.

    Args:
        path: the image file.
        max_pixels: refuse images whose declared width × height exceeds this (at most
            :data:`MAX_PIXELS`, Pillow's own limit).
        target: ``(width, height)`` the caller needs at least; a larger image is reduced on read by
            an integer factor (never below ``target``). ``None`` keeps the full resolution.

    Returns:
        A loaded RGB ``PIL.Image`` (the file is closed); ``image.info[SOURCE_SIZE]`` is the
        (width, height) of the file, to map coordinates given in the file's pixels.

    Raises:
        ImageReadError: (a :class:`DatasetError`) naming the file: missing, not an image, truncated,
            or over the pixel limit.
    """
    limit = min(int(max_pixels), MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; our limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limit:
                    raise _too_big(path, width, height, limit)
                factor = _reduction((width, height), target)
                if factor > 1 and img.format == "JPEG":
                    assert target is not None
                    img.draft("RGB", (max(1, int(target[0])), max(1, int(target[1]))))
                    factor = max(1, min(img.size[0] // target[0], img.size[1] // target[1]))
                img.load()
                if factor > 1 and img.mode in _REDUCIBLE:  # reduce first: no full-size copy
                    out = img.reduce(factor).convert("RGB")
                else:
                    out = img.convert("RGB")  # a copy: the file is closed after this block
                    if factor > 1:
                        out = out.reduce(factor)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise _fail(
            path, "image file not found", "restore it or remove it from the labels"
        ) from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not an image file") from None
    except Image.DecompressionBombError as err:
        # Pillow refused at open (above its own limit) before we saw the size.
        sizes = [int(n) for n in re.findall(r"\d+", str(err))]
        pixels = f"{sizes[0] / 1e6:.0f} megapixels" if sizes else "too many pixels"
        raise _fail(
            path,
            f"image declares {pixels}, over the limit of {limit / 1e6:.0f} megapixels "
            "(a decompression bomb or a mislabelled file)",
            "resize it or remove it",
        ) from None
    except MemoryError:
        raise _fail(path, "not enough memory to decode the image", "resize it") from None
    except Exception as err:  # Pillow raises many types for corrupt data
        text = str(err).replace(str(path), "<file>").strip().splitlines()
        reason = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
        raise _fail(path, f"cannot read the image ({reason})") from None
    out.info[SOURCE_SIZE] = (width, height)
    return out


def _too_big(path: str | os.PathLike[str], width: int, height: int, limit: int) -> ImageReadError:
    return _fail(
        path,
        f"image is {width}×{height} ({width * height / 1e6:.0f} megapixels), over the limit of "
        f"{limit / 1e6:.0f} megapixels (a decompression bomb or a mislabelled file)",
        "resize it or remove it",
    )
