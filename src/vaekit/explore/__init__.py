"""The latent-space explorer: a FastAPI app serving one static page and a small JSON API.

``create_app(model, x, labels)`` encodes the items ``x`` ``(N, *event_shape)`` (values in the
likelihood's support) once, orders the latent dimensions by KL and computes a 2-D map; every request
then decodes a few codes. Every input is validated (length, finiteness, range, indices): a
malformed request gets a 4xx answer ``{"error": message}``, never a crash. Outputs are rendered as
``{"image": data-URI PNG}`` for images, else ``{"values": [...]}`` (the page draws bars).

    GET  /                 the page           GET  /api/info          run, dims by KL, sliders
    GET  /api/map?method=  PCA / t-SNE        GET  /api/item/{i}      input, reconstruction, code
    POST /api/decode       {z, item}          POST /api/interpolate   {a, b, steps, path, top}
    POST /api/sample       {n, temperature, seed}
    POST /api/attribute    {item, alpha, positive: {labels | indices}, negative: ... | null}

Hierarchical models (``groups``, ``lower``; see ``vaekit.latent``): the sliders and attribute
vectors act on the groups ``groups`` names (default all); with fewer than all, a decoded code
keeps those and fills the groups below from the prior means (``lower="prior"``, default) or from
the posterior means of the item the code came from (``item``, ``lower="posterior"``).
"""

# No ``from __future__ import annotations``: FastAPI reads the request models defined inside
# ``create_app`` from the endpoints' live annotations.
import base64
import io
import threading
from importlib import resources
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images
from ..latent import (
    PATHS,
    apply_attribute,
    attribute_vector,
    decode_groups,
    decode_mean,
    dims_by_kl,
    encode,
    group_dims,
    index_mask,
    latent_map,
    n_groups_of,
    restrict_dims,
)

__all__ = ["BodyLimit", "create_app", "serve", "Z_MAX", "MAX_BODY_BYTES"]

Z_MAX = 10.0  # |z_d| accepted from the page (the prior N(0, 1) puts 1e-23 mass beyond 10)
ALPHA_MAX = 10.0
MAX_BODY_BYTES = 1 << 20
MAX_STEPS = 64
MAX_SAMPLES = 64
MAX_TEMPERATURE = 3.0


def render(model, x: Tensor) -> list[dict]:
    """Values ``(B, *event_shape)`` → one ``{"image": PNG data URI}`` (images) or
    ``{"values": [...]}`` (anything else) per row."""
    if images.is_image(model.event_shape):
        unit = images._to_unit(model, x)
        out = []
        for row in unit:
            buf = io.BytesIO()
            Image.fromarray(images.grid(row[None], nrow=1, pad=0)).save(buf, format="PNG")
            out.append(
                {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}
            )
        return out
    return [{"values": [round(float(v), 5) for v in row.flatten()]} for row in x]


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 whether its size is declared
    (Content-Length) or not (chunked transfer); a body is read at most to the limit, then handed
    to the app whole."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            await _refuse(scope, receive, send, 400, "malformed Content-Length header")
            return
        chunks, size = [], 0 if length is None else int(length)
        while size <= self.limit:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if length is None:
                size += len(chunks[-1])
            if not message.get("more_body", False):
                break
        if size > self.limit or sum(map(len, chunks)) > self.limit:
            await _refuse(scope, receive, send, 413, f"request body over {self.limit} bytes")
            return
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    from starlette.responses import JSONResponse

    await JSONResponse({"error": message}, status)(scope, receive, send)


def create_app(
    model,
    x: Tensor,
    labels: Tensor | None = None,
    *,
    name: str = "",
    n_sliders: int = 12,
    groups: str | int = "all",
    lower: str = "prior",
):
    """The explorer for ``model`` on items ``x`` with optional integer ``labels`` ``(N,)``;
    ``groups``/``lower``: what hierarchical models' sliders edit (see the module doc)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if len(x) < 2:
        raise ValueError("the explorer needs at least two items")
    model.eval()
    d = model.latent_dim
    z_items = encode(model, x)  # (N, D)
    order, kl = dims_by_kl(model, x)
    n_top = n_groups_of(model, groups)
    edited = group_dims(model, n_top)  # the coordinates sliders and vectors act on
    slider_dims, _ = restrict_dims(order, kl, edited)
    if lower not in ("posterior", "prior"):
        raise ValueError(f"lower must be posterior or prior, got {lower!r}")

    def decode_code(z: Tensor, item: int | None) -> Tensor:
        """E[x|z] for codes ``(B, D)``; the groups below the edited ones from ``item``."""
        ref = x[item : item + 1].float() if item is not None and lower == "posterior" else None
        rule = "posterior" if ref is not None else "prior"
        return decode_groups(model, z, n_top, x=ref, lower=rule)

    maps: dict[str, np.ndarray] = {"pca": latent_map(z_items, "pca")}
    map_lock = threading.Lock()
    label_list = None if labels is None else [int(v) for v in labels]
    n = len(x)

    finite = Annotated[float, Field(allow_inf_nan=False, ge=-Z_MAX, le=Z_MAX)]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class DecodeRequest(Strict):
        z: list[finite] = Field(min_length=d, max_length=d)
        item: int | None = Field(None, ge=0, lt=n)  # where the code came from (lower groups)

    class InterpolateRequest(Strict):
        a: int = Field(ge=0, lt=n)
        b: int = Field(ge=0, lt=n)
        steps: int = Field(10, ge=2, le=MAX_STEPS)
        path: Literal["linear", "slerp"] = "linear"
        top: bool = False  # only the edited groups follow the path (the rest: prior means)

    class SampleRequest(Strict):
        n: int = Field(16, ge=1, le=MAX_SAMPLES)
        temperature: float = Field(1.0, ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)
        seed: int = Field(0, ge=0, lt=2**31)

    class Selection(Strict):
        labels: list[int] | None = Field(None, min_length=1, max_length=1000)
        indices: list[int] | None = Field(None, min_length=1, max_length=n)

        @model_validator(mode="after")
        def one_kind(self):
            if (self.labels is None) == (self.indices is None):
                raise ValueError("give exactly one of 'labels' or 'indices'")
            return self

    class AttributeRequest(Strict):
        item: int = Field(ge=0, lt=n)
        alpha: float = Field(ge=-ALPHA_MAX, le=ALPHA_MAX, allow_inf_nan=False)
        positive: Selection
        negative: Selection | None = None

    def mask(sel: Selection, what: str) -> Tensor:
        if sel.indices is not None:
            return index_mask(n, sel.indices)
        if labels is None:
            raise HTTPException(422, f"{what}: these items have no labels; name indices instead")
        return torch.isin(labels, torch.tensor(sel.labels))

    app = FastAPI(title=f"vaekit explorer {name}", docs_url=None, redoc_url=None)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        msgs = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msgs.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"error": "; ".join(msgs) or "malformed request"}, 422)

    @app.exception_handler(StarletteHTTPException)  # also the router's 404 and 405
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError):
        return JSONResponse({"error": str(exc)}, 422)

    page = (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/api/info")
    def info():
        return {
            "name": name,
            "latent_dim": d,
            "event_shape": list(model.event_shape),
            "is_image": images.is_image(model.event_shape),
            "n_items": n,
            "labels": sorted(set(label_list)) if label_list is not None else None,
            "dims": [
                {"dim": int(i), "kl": round(float(v), 4)} for i, v in zip(order, kl, strict=True)
            ],
            "sliders": [int(i) for i in slider_dims[: min(n_sliders, d)]],
            "groups": {"edited": n_top, "total": model.n_groups, "lower": lower},
            "z_max": Z_MAX,
            "alpha_max": ALPHA_MAX,
            "max_steps": MAX_STEPS,
            "max_temperature": MAX_TEMPERATURE,
        }

    @app.get("/api/map")
    def get_map(method: Literal["pca", "tsne"] = "pca"):
        with map_lock:
            if method not in maps:
                maps[method] = latent_map(z_items, method)
        return {
            "method": method,
            "points": np.round(maps[method], 4).tolist(),
            "labels": label_list,
        }

    @app.get("/api/item/{index}")
    def item(index: int):
        if not 0 <= index < n:
            raise HTTPException(404, f"item {index} is outside 0..{n - 1}")
        z = z_items[index]
        shown, recon = render(
            model, torch.stack([x[index].float(), decode_mean(model, z[None])[0]])
        )
        return {
            "index": index,
            "label": None if label_list is None else label_list[index],
            "z": [round(float(v), 5) for v in z],
            "input": shown,
            "reconstruction": recon,
        }

    @app.post("/api/decode")
    def decode(req: DecodeRequest):
        z = torch.tensor(req.z, dtype=z_items.dtype)
        return {"output": render(model, decode_code(z[None], req.item))[0]}

    @app.post("/api/interpolate")
    def interpolate(req: InterpolateRequest):
        path = PATHS[req.path](z_items[req.a], z_items[req.b], req.steps)  # (steps, D)
        frames = decode_groups(model, path, n_top) if req.top else decode_mean(model, path)
        return {"frames": render(model, frames), "a": req.a, "b": req.b}

    @app.post("/api/sample")
    def sample(req: SampleRequest):
        gen = torch.Generator().manual_seed(req.seed)
        x_new = model.sample(req.n, temperature=req.temperature, mean=True, generator=gen)
        return {"samples": render(model, x_new)}

    @app.post("/api/attribute")
    def attribute(req: AttributeRequest):
        pos = mask(req.positive, "positive")
        neg = None if req.negative is None else mask(req.negative, "negative")
        v = torch.zeros(d, dtype=z_items.dtype)
        v[edited] = attribute_vector(z_items[:, edited], pos, neg)
        z = apply_attribute(z_items[req.item][None], v, [req.alpha])[0]  # (1, D)
        return {
            "output": render(model, decode_code(z, req.item))[0],
            "norm": round(float(v.norm()), 4),
            "n_positive": int(pos.sum()),
            "n_negative": int((~pos if neg is None else neg).sum()),
        }

    return app


def serve(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
