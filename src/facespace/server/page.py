"""The web app's files: ``static/index.html`` (with the server's settings filled in), ``app.js`` and
``app.css``, plain files without a build step, shipped as package data.

The page has People, Verify, Identify, Albums and Attendance views (``#people`` ...). Faces are
drawn as boxes on a canvas over each photo. ``/?demo=verify`` and ``/?demo=identify`` run the
page on the server's demo images without any clicking.

The API key never goes into a URL (URLs are written to access logs): it is typed into the page's
password field, kept in the tab's ``sessionStorage`` and sent as the ``X-API-Key`` header, the
pictures' requests included (fetched, then shown from blob URLs).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

#: The files served under ``/static/``, and their media types.
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@lru_cache(maxsize=None)
def static_file(name: str) -> bytes:
    """One of :data:`STATIC_FILES` (or ``index.html``), read from the package."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def render_page(requires_key: bool, demos: int, has_gallery: bool, albums: bool = False) -> str:
    """``index.html`` with the settings the script reads (JSON in a script element: no ``<`` in it)."""
    config = json.dumps({"requiresKey": requires_key, "demos": demos, "hasGallery": has_gallery, "albums": albums})
    return static_file("index.html").decode("utf-8").replace("__CONFIG__", config.replace("<", "\\u003c"))
