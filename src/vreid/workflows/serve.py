"""``vreid serve INDEX``: a local web page and JSON API over a gallery index.

* ``GET /`` — the page (plain HTML + JS): drop or choose a query image, or click a gallery image to
  search for more like it; the ranked gallery as thumbnails with distance, camera and track, paged.
* ``POST /api/query`` — multipart ``image`` (an upload, ≤ ``max_upload`` bytes, must decode as an
  image) or ``id`` (a gallery item), form/query fields ``offset`` and ``top``; or the same fields
  with ``query`` = the ``query`` token of an earlier answer to page through it. Answers
  ``{"query", "total", "offset", "top", "row", "hits": [{"id", "distance", "camera", "track",
  "name", "thumb"}]}``.
* ``GET /thumb/{id}`` — a JPEG thumbnail of gallery item ``id`` (the index's own path; nothing in a
  request names a file).
* ``GET /api/info`` — count, models, settings.

Binds 127.0.0.1 by default; any other address needs a token, then sent as ``Authorization:
Bearer TOKEN`` or ``?token=TOKEN`` (the page passes on the one in its own address).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from vreid.core.config import Config
from vreid.core.errors import VreidError
from vreid.workflows.index import Searcher

MAX_UPLOAD = 10 * 1024 * 1024
THUMB_SIZE = 160


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    searcher: Searcher, *, token: str | None = None, max_upload: int = MAX_UPLOAD
) -> FastAPI:
    """The ASGI app over ``searcher`` (tests drive it with an ASGI client)."""
    app = FastAPI(title="vreid index", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one query at a time: torch and the graphs are shared
    results: OrderedDict[str, tuple[np.ndarray, str]] = OrderedDict()
    count = searcher.index.count

    def check_token(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid token is required")

    def answer(key: str, offset: int, top: int) -> dict[str, Any]:
        dist, row = results[key]
        offset = max(0, min(offset, count))
        top = max(1, min(top, 500))
        order = np.argsort(dist, kind="stable")[offset : offset + top]
        it = searcher.items
        hits = [
            {
                "id": int(g),
                "distance": float(dist[g]),
                "camera": int(it.camera[g]),
                "track": int(it.track[g]),
                "name": it.names[g],
                "thumb": f"/thumb/{int(g)}",
            }
            for g in order
        ]
        return {
            "query": key,
            "total": count,
            "offset": offset,
            "top": top,
            "row": row,
            "hits": hits,
        }

    def remember(dist: np.ndarray, row: str) -> str:
        key = secrets.token_hex(8)
        results[key] = (dist, row)
        while len(results) > 64:
            results.popitem(last=False)
        return key

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> str:
        check_token(request)
        return PAGE

    @app.get("/api/info")
    def info(request: Request) -> dict[str, Any]:
        check_token(request)
        m = searcher.manifest
        return {
            "count": count,
            "models": [x["name"] for x in m["models"]],
            "attributes": m.get("attributes") is not None,
            "settings": m["settings"],
        }

    @app.get("/thumb/{item}")
    def thumb(item: int, request: Request) -> Response:
        check_token(request)
        if not 0 <= item < count:
            raise HTTPException(404, f"no gallery item {item}")
        try:
            with Image.open(searcher.items.paths[item]) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
        except (OSError, UnidentifiedImageError):
            raise HTTPException(404, f"gallery item {item}: image unreadable") from None
        return Response(buf.getvalue(), media_type="image/jpeg")

    @app.post("/api/query")
    async def query(request: Request) -> JSONResponse:
        check_token(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload + 65536:
            raise HTTPException(413, f"upload larger than {max_upload} bytes")
        fields: dict[str, Any] = dict(request.query_params)
        upload = None
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form(max_files=1, max_fields=8)
            for k, v in form.multi_items():
                if k == "image" and hasattr(v, "read"):
                    upload = await v.read(max_upload + 1)
                    if len(upload) > max_upload:
                        raise HTTPException(413, f"upload larger than {max_upload} bytes")
                elif isinstance(v, str):
                    fields[k] = v
        elif ctype.startswith("application/json"):
            body = await request.json()
            if isinstance(body, dict):
                fields.update({k: v for k, v in body.items() if k != "image"})
        try:
            offset = int(fields.get("offset", 0))
            top = int(fields.get("top", 24))
        except (TypeError, ValueError):
            raise HTTPException(400, "offset and top must be integers") from None
        key = fields.get("query")
        if key is not None and key in results:
            return JSONResponse(answer(key, offset, top))
        if upload is not None:
            try:
                with Image.open(io.BytesIO(upload)) as im:
                    im.load()
                    image = im.convert("RGB")
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
                raise HTTPException(400, "the upload is not a readable image") from None
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "query.png"
                image.save(path)
                with lock:
                    feats, attrs = searcher.features_of([path])
                    dist, row = searcher.distances(feats, attrs)
        elif "id" in fields:
            try:
                item = int(fields["id"])
            except (TypeError, ValueError):
                raise HTTPException(400, "id must be an integer") from None
            if not 0 <= item < count:
                raise HTTPException(404, f"no gallery item {item}")
            with lock:
                feats, attrs = searcher.features_of_items([item])
                dist, row = searcher.distances(feats, attrs)
        else:
            raise HTTPException(400, "send an image (multipart field 'image') or a gallery 'id'")
        return JSONResponse(answer(remember(dist[0], row), offset, top))

    return app


def serve(
    index: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    config: Config | None = None,
    candidates: int | None = None,
) -> None:
    """Run the page and API with uvicorn until interrupted (``candidates``: see
    :class:`~vreid.workflows.index.Searcher`)."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise VreidError(
            f"binding {host} exposes the index beyond this machine: give --token (or VREID_TOKEN)"
        )
    searcher = Searcher(index, config=config, candidates=candidates)
    app = create_app(searcher, token=token)
    print(f"vreid serve: http://{host}:{port}/ ({searcher.index.count} gallery images)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vreid — search the gallery</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;background:#f6f6f6;color:#222}
#drop{border:2px dashed #888;border-radius:8px;padding:1.2em;text-align:center;background:#fff}
#drop.over{background:#e8f0ff;border-color:#36c}
#status{margin:.6em 0;min-height:1.2em}
#query img{max-height:120px;border:3px solid #36c;border-radius:4px}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.hit{background:#fff;border-radius:6px;padding:6px;box-shadow:0 1px 3px #0002;cursor:pointer}
.hit img{width:100%;height:140px;object-fit:contain;background:#eee}
.hit .meta{font-size:12px;line-height:1.4}
.pager{margin:.8em 0}
button{padding:.3em .9em}
</style></head><body>
<h2>vreid — search the gallery</h2>
<div id="drop">Drop a vehicle image here, or <input type="file" id="file" accept="image/*">
 &nbsp; <button id="browse">browse the gallery</button></div>
<div id="status"></div><div id="query"></div>
<div class="pager"><button id="prev">◀ previous</button> <span id="page"></span>
 <button id="next">next ▶</button></div>
<div id="grid"></div>
<script>
const token = new URLSearchParams(location.search).get('token');
const auth = token ? {'Authorization': 'Bearer ' + token} : {};
const withToken = u => token ? u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : u;
const TOP = 24;
let state = {query: null, offset: 0, total: 0};
const $ = id => document.getElementById(id);
function status(t) { $('status').textContent = t; }
async function post(form) {
  const r = await fetch('/api/query', {method: 'POST', body: form, headers: auth});
  const j = await r.json();
  if (!r.ok) throw new Error(j.detail || r.statusText);
  return j;
}
function render(j) {
  state = {query: j.query, offset: j.offset, total: j.total};
  const g = $('grid'); g.innerHTML = '';
  j.hits.forEach((h, i) => {
    const d = document.createElement('div'); d.className = 'hit'; d.dataset.id = h.id;
    d.innerHTML = `<img src="${withToken(h.thumb)}" alt="">` +
      `<div class="meta"><b>#${j.offset + i + 1}</b> id ${h.id} · d ${h.distance.toFixed(4)}<br>` +
      `camera ${h.camera < 0 ? '?' : h.camera} · track ${h.track < 0 ? '?' : h.track}</div>`;
    d.querySelector('.meta').insertAdjacentText('beforeend', h.name);
    d.onclick = () => byId(h.id);
    g.appendChild(d);
  });
  $('page').textContent = `${j.offset + 1}–${j.offset + j.hits.length} of ${j.total} (${j.row})`;
  status('');
}
async function run(form, label) {
  status('searching …');
  try { render(await post(form)); } catch (e) { status('error: ' + e.message); }
}
function byFile(f) {
  const form = new FormData(); form.append('image', f); form.append('top', TOP);
  $('query').innerHTML = ''; const img = document.createElement('img');
  img.src = URL.createObjectURL(f); $('query').appendChild(img);
  run(form);
}
function byId(id) {
  const form = new FormData(); form.append('id', id); form.append('top', TOP);
  $('query').innerHTML = `<img src="${withToken('/thumb/' + id)}" alt="">`;
  run(form);
}
function page(delta) {
  if (!state.query) return;
  const off = Math.max(0, Math.min(state.total - 1, state.offset + delta));
  const form = new FormData(); form.append('query', state.query);
  form.append('offset', off); form.append('top', TOP); run(form);
}
$('file').onchange = e => { if (e.target.files[0]) byFile(e.target.files[0]); };
$('browse').onclick = () => byId(0);
$('prev').onclick = () => page(-TOP); $('next').onclick = () => page(TOP);
const drop = $('drop');
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files[0]) byFile(e.dataTransfer.files[0]); };
</script></body></html>
"""
