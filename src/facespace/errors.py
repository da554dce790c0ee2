"""Exceptions raised by facespace.

Every error a user can cause derives from :class:`FacespaceError`, so the CLI
can turn it into one clear line and a non-zero exit instead of a traceback.
"""

from typing import Any, TypeVar, get_args

T = TypeVar("T")


class FacespaceError(Exception):
    """Base class for every error facespace raises on purpose."""


class ImageLoadError(FacespaceError):
    """An input could not be read as an image (missing, empty, corrupt, not an image)."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than the configured limit (decompression-bomb guard)."""


class NoFaceError(FacespaceError):
    """No face was found where at least one was required."""


class UnknownModelError(FacespaceError, KeyError):
    """A model name is not in the pretrained registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(FacespaceError):
    """Pretrained weights could not be fetched, verified or read."""


class ChecksumError(WeightsError):
    """A fetched weight file does not match the sha256 in the registry."""


class ModelMismatchError(FacespaceError):
    """Embeddings made by different models or preprocessing were compared."""


class OptionError(FacespaceError, ValueError):
    """An option has a value facespace does not know or cannot use (the message says which work)."""


def check_choice(value: T, options: Any, what: str) -> T:
    """``value`` if it is one of ``options`` (a ``Literal`` type or a sequence), else :class:`OptionError`."""
    allowed = get_args(options) or tuple(options)
    if value not in allowed:
        raise OptionError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, allowed))}")
    return value
