"""Pre-trained weights the way every torchvision user gets them.

A published weights file (torchvision's ``Weights`` enums: ImageNet classifiers, COCO detectors, or
any URL whose file name follows torch.hub's ``<name>-<sha256 prefix>.pth`` rule) lives in the torch
hub cache, ``torch.hub.get_dir()/checkpoints/<file name of the URL>`` (``$TORCH_HOME/hub/
checkpoints``, by default ``~/.cache/torch/hub/checkpoints``):

* when the file is there, it is read from there (``torch.load(..., weights_only=True)``), after
  checking that its SHA-256 starts with the hash in its name (torch.hub checks only downloads; a
  truncated or replaced file is caught here too);
* when it is not, it is downloaded there by torch.hub (``load_state_dict_from_url(url,
  progress=True, check_hash=True, weights_only=True)``): a progress bar on stderr and the hash check
  of the download, exactly as ``torchvision.models.resnet50(weights=...)`` does;
* offline (``VREID_OFFLINE=1``, or no network: the host does not resolve or answer within
  ``VREID_DOWNLOAD_TIMEOUT`` seconds, 10 by default) a missing file is a one-line
  :class:`~vreid.core.errors.WeightsError` naming the exact cache path and the URL to fetch it from
  on another machine. Nothing ever falls back to random weights.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vreid.core.errors import WeightsError

log = logging.getLogger("vreid.weights")

OFFLINE_ENV = "VREID_OFFLINE"
"""Environment variable: ``1`` (or ``true``/``yes``/``on``) never attempts a download."""
TIMEOUT_ENV = "VREID_DOWNLOAD_TIMEOUT"
"""Environment variable: seconds a name lookup, connection or read may stall before a download
attempt is given up (default :data:`DEFAULT_TIMEOUT_S`)."""
DEFAULT_TIMEOUT_S = 10.0

# torch.hub's naming rule, kept strict for files we check ourselves: the file name ends in
# "-<at least 8 hex digits of its SHA-256>.<extension>" (resnet18-f37072fd.pth).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def is_offline() -> bool:
    """True when ``VREID_OFFLINE`` asks never to download."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def download_timeout() -> float:
    """Seconds a download attempt may stall (``VREID_DOWNLOAD_TIMEOUT``, default 10)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise WeightsError(f"{TIMEOUT_ENV}={raw!r}: not a number of seconds") from None
    if not value > 0:
        raise WeightsError(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds")
    return value


def hub_checkpoints_dir() -> Path:
    """torch.hub's weights cache: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file of ``url``: the cache folder / its file name."""
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise WeightsError(f"{url}: the URL names no file")
    return hub_checkpoints_dir() / name


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a torch.hub-style file name carries (``resnet18-f37072fd.pth`` →
    ``f37072fd``), or None when the name has none."""
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, hex. Remembered per (file, size, modification time): the
    pipeline's freshness check and each crop fingerprint the same weights file, which for the
    larger detectors is 100-200 MB."""
    st = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file_hash(path: Path) -> None:
    """Check torch.hub's naming rule on ``path``: when its name carries a hash
    (``<name>-<hex>.pth``), its SHA-256 must start with it. Names without one are not checked."""
    prefix = hash_prefix(path.name)
    if prefix is None:
        return
    actual = file_sha256(path)
    if not actual.startswith(prefix):
        raise WeightsError(
            f"{path}: SHA-256 {actual[:12]}… does not start with {prefix} as its name says; the file "
            "is corrupt or not the published one. Delete it (it is downloaded again on the next "
            "use) or replace it with the right file."
        )


def read_weights_file(path: Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure is a
    :class:`WeightsError` naming the file."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, a pickle of disallowed objects, …
        raise WeightsError(
            f"{path}: cannot read it as a PyTorch weights file ({torch_load_problem(path, err)})"
        ) from None


# First bytes of files that are often passed by mistake where a PyTorch file is expected.
_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"{", "a JSON/text file"),
    (b"<", "an XML/HTML file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 (Keras) file"),
)


def torch_load_problem(path: str | os.PathLike[str], err: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in a few words.

    The one description every loader of PyTorch files uses: an empty file, a file of another kind
    (recognised by its first bytes), a file holding objects other than tensors and plain data, or
    the first line of PyTorch's message. PyTorch's advice to retry with ``weights_only=False`` is
    never repeated: that would run code from the file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        size = os.path.getsize(path)
    except OSError as os_err:
        return f"cannot read it: {os_err.strerror or os_err}"
    if size == 0:
        return "the file is empty (0 bytes); an interrupted copy or download?"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"it is {kind}, not a PyTorch file"
    if not head.startswith(b"PK\x03\x04") and head[:1] not in (b"\x80",):
        return f"not a PyTorch file ({size} bytes that are neither a zip archive nor a pickle)"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return f"the file is truncated or corrupt ({size} bytes; its zip directory is missing)"
    text = str(err)
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds Python objects{what} besides tensors and plain data, which vreid does not "
            "load because loading them runs code from the file"
        )
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    if isinstance(err, EOFError) or "failed finding central directory" in first:
        return f"the file is truncated or corrupt ({size} bytes)"
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib (inside torch.hub) opens sockets without a timeout: give them one for the attempt."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _host_to_contact(url: str) -> tuple[str, int] | None:
    """The host urllib will connect to for ``url``: its proxy when one applies, else the URL's."""
    parts = urllib.parse.urlparse(url)
    if parts.hostname is None:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        p = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or 80
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _resolve_within(host: str, port: int, seconds: float) -> None:
    """Resolve ``host`` or raise :class:`OSError`; a name lookup is not covered by socket
    timeouts, so it runs in a daemon thread given ``seconds``."""
    outcome: dict[str, BaseException | None] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome["error"] = None
        except BaseException as err:  # reported to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(seconds)
    if "error" not in outcome:
        raise TimeoutError(f"looking up {host} took more than {seconds:g} s")
    error = outcome["error"]
    if error is not None:
        raise error


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _missing(what: str, url: str, path: Path, reason: str, instead: str) -> WeightsError:
    return WeightsError(
        f"{what}: {path.name} is not in the torch hub cache and cannot be downloaded ({reason}). "
        f"Fetch {url} on a machine with network access and put it at {path}"
        + (f", {instead}" if instead else "")
    )


def fetch_state_dict(url: str, *, what: str, instead: str = "") -> tuple[Any, Path]:
    """The object saved at ``url`` (a state dict, usually) and its path in the torch hub cache.

    Read from the cache when the file is there (hash-checked), else downloaded there by torch.hub
    with a progress bar and its hash check (see the module docstring).

    Args:
        url: the published file (``Weights.url`` of a torchvision weights enum member).
        what: what the file is, for messages (``"ImageNet weights of resnet50"``).
        instead: what else the user can do, appended to the offline error
            (``"or set model.pretrained to the file's path"``).

    Raises:
        WeightsError: the file is missing and cannot be downloaded (offline, no network, HTTP
            error, a download whose hash does not match), or the cached file is corrupt.
    """
    path = cache_path(url)
    if path.is_file():
        verify_file_hash(path)
        return read_weights_file(path), path
    if is_offline():
        raise _missing(what, url, path, f"{OFFLINE_ENV}=1", instead)
    seconds = download_timeout()
    try:
        target = _host_to_contact(url)
        if target is not None:
            _resolve_within(*target, seconds)
        log.info("downloading %s from %s to %s", what, url, path)
        with _socket_timeout(seconds):
            state = torch.hub.load_state_dict_from_url(
                url,
                model_dir=str(path.parent),
                map_location="cpu",
                progress=True,
                check_hash=True,
                weights_only=True,
            )
    except (OSError, http.client.HTTPException, ValueError) as err:
        # OSError covers URLError, HTTPError, socket timeouts and failed name lookups
        raise _missing(what, url, path, _reason(err), instead) from None
    except RuntimeError as err:
        if "hash" in str(err):  # torch.hub: "invalid hash value (expected …, got …)"
            raise WeightsError(
                f"{what}: the file downloaded from {url} does not match the hash in its name "
                f"({str(err).strip()}); nothing was kept at {path}. Try again; if it persists, "
                f"fetch the file another way and put it at {path}"
            ) from None
        raise
    return state, path
