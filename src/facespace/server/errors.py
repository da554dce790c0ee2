"""The service's errors: :class:`ApiError`, the exception → (status, type) table, the JSON error
handlers and the request-size middleware.

Every error is JSON ``{"error": {"type": ..., "message": ..., "status": ...}}``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware

from ..errors import (FacespaceError, ImageLoadError, ImageTooLargeError, ModelMismatchError, NoFaceError,
                      UnknownModelError)


class ApiError(FacespaceError):
    """An error that carries its own HTTP status and type string (and any headers its answer needs,
    such as ``Retry-After``)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, dict(headers or {})


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and error type string for ``exc``."""
    from ..gallery.records import GalleryError, GalleryUnavailableError, IdentityExistsError, UnknownIdentityError

    table = [
        (ApiError, None), (ImageTooLargeError, (413, "image_too_large")), (ImageLoadError, (400, "bad_image")),
        (NoFaceError, (422, "no_face")), (ModelMismatchError, (409, "model_mismatch")),
        (UnknownIdentityError, (404, "unknown_identity")), (IdentityExistsError, (409, "identity_exists")),
        (UnknownModelError, (400, "unknown_model")), (GalleryUnavailableError, (503, "gallery_unavailable")),
        (GalleryError, (400, "gallery_error")),
        (FacespaceError, (400, "error")),
    ]
    for cls, result in table:
        if isinstance(exc, cls):
            return (exc.status, exc.kind) if result is None else result
    return 500, "internal_error"


def error_response(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "status": status}}, status_code=status,
                        headers=headers)


async def _facespace_error(request: Request, exc: FacespaceError) -> JSONResponse:
    status, kind = status_of(exc)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if kind == "gallery_unavailable":
        headers.setdefault("Retry-After", "1")
    return error_response(status, kind, str(exc), headers or None)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
    return error_response(422, "invalid_request", details or "invalid request")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, "http_error", str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


async def _limit_body(request: Request, call_next):
    """Refuse a request over ``max_request_bytes`` (of the app's Limits) before any endpoint reads it."""
    limit = request.app.state.facespace.limits.max_request_bytes
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            return error_response(400, "bad_request", "invalid Content-Length")
        if too_big:
            return error_response(413, "request_too_large",
                                  f"request of {int(length):,} bytes is over the limit of {limit:,}")
    elif request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return error_response(413, "request_too_large", f"request is over the limit of {limit:,} bytes")
        request._body = body  # replayed by Starlette for the endpoint
    return await call_next(request)


def install_error_handling(app: FastAPI) -> None:
    """JSON error handlers for every exception, and the request-size limit."""
    app.add_exception_handler(FacespaceError, _facespace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BaseHTTPMiddleware, dispatch=_limit_body)
