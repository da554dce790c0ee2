"""The REST service: a FastAPI app over the pipeline, a gallery and clustering.

``create_app(pipeline_factory, gallery_path, api_key, limits, ..., security, inference_threads)`` builds it;
``facespace serve`` runs it under uvicorn. OpenAPI at ``/openapi.json`` and
``/docs``; a small upload page at ``/``.
"""

from .app import Limits, Security, create_app

__all__ = ["Limits", "Security", "create_app"]
