"""FastAPI application: detect, embed, verify, identify, enrol, list/remove identities, cluster.

Every error is JSON ``{"error": {"type": ..., "message": ...}}`` with a fitting
status: 400 unreadable image or bad input, 401 missing/wrong API key, 404
unknown identity, 409 model mismatch or duplicate name, 413 upload or image
too large, 422 no face where one is needed or invalid parameters, 503 no
gallery configured.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (FacespaceError, ImageLoadError, ImageTooLargeError, ModelMismatchError, NoFaceError,
                      UnknownModelError)

if TYPE_CHECKING:
    from ..pipeline import FacePipeline


@dataclass(frozen=True)
class Limits:
    """Request limits: bytes per uploaded file and per request, pixels per image, files per request."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 100
    max_top: int = 100


class ApiError(FacespaceError):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def _status_of(exc: Exception) -> tuple[int, str]:
    from ..gallery.store import GalleryError, IdentityExistsError, UnknownIdentityError

    table = [
        (ApiError, None), (ImageTooLargeError, (413, "image_too_large")), (ImageLoadError, (400, "bad_image")),
        (NoFaceError, (422, "no_face")), (ModelMismatchError, (409, "model_mismatch")),
        (UnknownIdentityError, (404, "unknown_identity")), (IdentityExistsError, (409, "identity_exists")),
        (UnknownModelError, (400, "unknown_model")), (GalleryError, (400, "gallery_error")),
        (FacespaceError, (400, "error")),
    ]
    for cls, result in table:
        if isinstance(exc, cls):
            return (exc.status, exc.kind) if result is None else result
    return 500, "internal_error"


def create_app(
    pipeline_factory: Callable[[], "FacePipeline"],
    gallery_path: str | Path | None = None,
    api_key: str | None = None,
    limits: Limits = Limits(),
    demo_images: Sequence[str | Path] = (),
    far: float = 0.01,
    index: str = "auto",
) -> FastAPI:
    """The facespace REST app.

    ``pipeline_factory`` is called once, on first need (or by :func:`warm`);
    ``gallery_path`` enables identify/enrol/identities; ``api_key`` (if set)
    must come as ``X-API-Key`` or ``Authorization: Bearer`` on every ``/api``
    call; ``demo_images`` are served at ``/demo/<i>`` for the page's demo mode.
    """
    from ..version import __version__
    from .page import render_page

    app = FastAPI(title="facespace", version=__version__,
                  description="FaceNet face detection, embedding, verification, identification and clustering.")
    state = _State(pipeline_factory, gallery_path, limits, far, index)
    app.state.facespace = state
    demos = [Path(p) for p in demo_images]

    # -- errors ---------------------------------------------------------------
    def error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": {"type": kind, "message": message, "status": status}}, status_code=status,
                            headers=headers)

    @app.exception_handler(FacespaceError)
    async def _facespace_error(request: Request, exc: FacespaceError):
        status, kind = _status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error(status, kind, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error(422, "invalid_request", details or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    # -- request size -----------------------------------------------------------
    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > limits.max_request_bytes
            except ValueError:
                return error(400, "bad_request", "invalid Content-Length")
            if too_big:
                return error(413, "request_too_large",
                             f"request of {int(length):,} bytes is over the limit of {limits.max_request_bytes:,}")
        elif request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_request_bytes:
                    return error(413, "request_too_large",
                                 f"request is over the limit of {limits.max_request_bytes:,} bytes")
            request._body = body  # replayed by Starlette for the endpoint
        return await call_next(request)

    # -- auth ------------------------------------------------------------------
    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None:
            raise ApiError(401, "unauthorized", "this server needs an API key (X-API-Key header)")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "unauthorized", "wrong API key")

    auth = [Depends(check_key)]

    def read(upload: UploadFile, field: str) -> bytes:
        data = upload.file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise ApiError(413, "upload_too_large",
                           f"{field} ({upload.filename}) is over the limit of {limits.max_upload_bytes:,} bytes")
        if not data:
            raise ImageLoadError(f"{field} ({upload.filename}): empty upload")
        return data

    def load(upload: UploadFile, field: str) -> np.ndarray:
        from ..imageio import load_image

        try:
            return load_image(read(upload, field), max_pixels=limits.max_pixels)
        except ImageLoadError as exc:
            raise type(exc)(f"{field} ({upload.filename}): {exc}") from None

    # -- pages ------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(requires_key=api_key is not None, demos=len(demos),
                                        has_gallery=gallery_path is not None))

    @app.get("/demo/{number}", include_in_schema=False)
    def demo(number: int) -> Response:
        if not 0 <= number < len(demos):
            raise ApiError(404, "not_found", f"no demo image {number}")
        suffix = demos[number].suffix.lower().lstrip(".")
        media = {"jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(suffix, f"image/{suffix}")
        return Response(demos[number].read_bytes(), media_type=media)

    @app.get("/health", tags=["service"])
    def health() -> dict:
        return {"status": "ok", "pipeline_loaded": state.loaded, "gallery": gallery_path is not None}

    @app.get("/api/info", tags=["service"], dependencies=auth)
    def info() -> dict:
        p = state.pipeline()
        out = {"model": p.model_name, "preprocessing_id": p.preprocessing_id, "threshold": p.threshold,
               "embedding_size": p.embedder.dim,
               "limits": {k: getattr(limits, k) for k in Limits.__dataclass_fields__}}
        if gallery_path is not None:
            with state.gallery_lock:
                g = state.gallery()
                out["gallery"] = {"identities": len(g), "model": g.model}
        return out

    # -- inference ----------------------------------------------------------------
    @app.post("/api/detect", tags=["inference"], dependencies=auth)
    def detect(image: UploadFile = File(..., description="photo")) -> dict:
        array = load(image, "image")
        faces = state.run(lambda p: p.detect_arrays([array])[0])
        return {"width": array.shape[1], "height": array.shape[0], "faces": [f.to_dict() for f in faces]}

    @app.post("/api/embed", tags=["inference"], dependencies=auth)
    def embed(image: UploadFile = File(...)) -> dict:
        array = load(image, "image")
        p = state.pipeline()
        faces = state.run(lambda p: p.embed(array))
        return {"model": p.model_name, "preprocessing_id": p.preprocessing_id,
                "width": array.shape[1], "height": array.shape[0], "faces": [f.to_dict() for f in faces]}

    @app.post("/api/verify", tags=["inference"], dependencies=auth)
    def verify(a: UploadFile = File(..., description="first photo"),
               b: UploadFile = File(..., description="second photo"),
               threshold: float | None = Form(None, ge=0, le=4)) -> dict:
        from ..comparison import verify as compare

        images = {"a": load(a, "a"), "b": load(b, "b")}
        faces = {}
        for key, array in images.items():
            found = state.run(lambda p: p.embed(array))
            if not found:
                raise NoFaceError(f"{key} ({(a if key == 'a' else b).filename}): no face found")
            faces[key] = (max(found, key=lambda f: f.face.area), found)
        p = state.pipeline()
        verdict = compare(faces["a"][0].embedding, faces["b"][0].embedding,
                          p.threshold if threshold is None else threshold)
        out = verdict.to_dict()
        try:
            from ..calibration import Calibration

            out["probability"] = round(float(Calibration.load(p.model_name, p.threshold)
                                             .probability(verdict.distance)), 6)
        except (FacespaceError, OSError, KeyError, ValueError):
            pass
        out["faces"] = {k: {"chosen": v[0].face.to_dict(), "all": [f.face.to_dict() for f in v[1]],
                            "width": int(images[k].shape[1]), "height": int(images[k].shape[0])}
                        for k, v in faces.items()}
        return out

    # -- gallery ------------------------------------------------------------------------
    @app.post("/api/identify", tags=["gallery"], dependencies=auth)
    def identify(image: UploadFile = File(...), top: int = Form(5, ge=1, le=limits.max_top),
                 threshold: float | None = Form(None, ge=0, le=4)) -> dict:
        array = load(image, "image")
        identifier = state.identifier(threshold)
        faces = state.run(lambda p: p.embed(array))
        found = identifier.search(np.stack([f.embedding for f in faces]), k=top) if faces else []
        return {"width": array.shape[1], "height": array.shape[0], "threshold": identifier.threshold,
                "faces": [{**f.face.to_dict(), **ident.to_dict()} for f, ident in zip(faces, found)]}

    @app.post("/api/identities", tags=["gallery"], dependencies=auth, status_code=201)
    def enroll(name: str = Form(..., min_length=1, max_length=200),
               images: list[UploadFile] = File(..., description="photos of this person"),
               replace: bool = Form(False)) -> dict:
        if len(images) > limits.max_files:
            raise ApiError(413, "too_many_files", f"at most {limits.max_files} images per request")
        arrays = [load(f, f"images[{i}]") for i, f in enumerate(images)]
        with state.gallery_lock:
            g = state.gallery()
            g.check_pipeline(state.pipeline())
            result = state.run(lambda p: g.enroll_images(p, name, arrays, replace=replace,
                                                         sources=[f.filename or f"upload{i}"
                                                                  for i, f in enumerate(images)]))
        if not result.added:
            raise NoFaceError(f"no face found in any image for {name!r}; nothing enrolled")
        return result.to_dict()

    @app.get("/api/identities", tags=["gallery"], dependencies=auth)
    def identities() -> dict:
        with state.gallery_lock:
            g = state.gallery()
            return {"model": g.model, "identities": [i.to_dict() for i in g.identities()]}

    @app.delete("/api/identities/{name}", tags=["gallery"], dependencies=auth)
    def remove(name: str) -> dict:
        with state.gallery_lock:
            count = state.gallery().remove(name)
        return {"removed": name, "embeddings": count}

    # -- clustering ------------------------------------------------------------------------
    @app.post("/api/cluster", tags=["clustering"], dependencies=auth)
    def cluster_endpoint(images: list[UploadFile] = File(...),
                         method: str = Form("agglomerative"),
                         threshold: float | None = Form(None, ge=0, le=4),
                         k: int | None = Form(None, ge=1)) -> dict:
        from ..clustering import METHODS, cluster, default_threshold

        if method not in METHODS:
            raise ApiError(422, "invalid_request", f"method must be one of {', '.join(METHODS)}")
        if len(images) > limits.max_files:
            raise ApiError(413, "too_many_files", f"at most {limits.max_files} images per request")
        arrays = [load(f, f"images[{i}]") for i, f in enumerate(images)]
        results = state.run(lambda p: p.embed_images(arrays, on_error="raise"))
        faces, vectors = [], []
        for i, result in enumerate(results):
            for f in result.faces:
                faces.append({"image": i, "filename": images[i].filename, **f.face.to_dict()})
                vectors.append(f.embedding)
        p = state.pipeline()
        t = default_threshold(p.model_name, method, len(vectors), p.threshold) if threshold is None else threshold
        dim = p.embedder.dim
        clustering = cluster(np.stack(vectors) if vectors else np.zeros((0, dim), np.float32), method,
                             threshold=t, k=k)
        return {"method": method, "params": clustering.params, "faces": len(faces),
                "clusters": [[faces[j] for j in members] for members in clustering.clusters()]}

    return app


class _State:
    """The lazily built pipeline, gallery and identifier, shared by all requests."""

    def __init__(self, factory, gallery_path, limits: Limits, far: float, index: str) -> None:
        self._factory = factory
        self._pipeline = None
        self._lock = threading.Lock()  # one inference at a time: the CPU is the bottleneck anyway
        self.gallery_lock = threading.RLock()
        self._gallery_path = gallery_path
        self._gallery = None
        self._identifiers: dict = {}
        self._limits, self._far, self._index = limits, far, index

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def pipeline(self):
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._factory()
                self._pipeline.max_pixels = self._limits.max_pixels
            return self._pipeline

    def run(self, fn):
        pipeline = self.pipeline()
        with self._lock:
            return fn(pipeline)

    def gallery(self):
        from ..gallery import Gallery

        if self._gallery_path is None:
            raise ApiError(503, "no_gallery", "this server has no gallery (start it with --gallery)")
        if self._gallery is None:
            self._gallery = Gallery(self._gallery_path)
        return self._gallery

    def identifier(self, threshold: float | None):
        from ..gallery import Identifier

        with self.gallery_lock:
            g = self.gallery()
            if g.model is None:
                raise ApiError(409, "empty_gallery", "the gallery is empty; enrol identities first")
            key = (g.generation, threshold)
            if key not in self._identifiers:
                self._identifiers = {key: Identifier.for_pipeline(g, self.pipeline(), threshold=threshold,
                                                                  far=self._far, index=self._index)}
            return self._identifiers[key]


def warm(app) -> None:
    """Build the pipeline now instead of on the first request."""
    app.state.facespace.pipeline()
