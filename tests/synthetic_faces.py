"""Synthetic embeddings for gallery, search and clustering tests: people as noisy unit vectors."""

from __future__ import annotations

import numpy as np


def people(n_people: int, per_person: int, dim: int = 128, spread: float = 0.35, seed: int = 0):
    """(embeddings (n_people*per_person, dim), labels): each person's faces scattered around a centre.

    With ``spread`` 0.35 same-person squared distances are about 0.2-0.4 and
    different-person ones about 2, like a good face model.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_people), per_person)
    noise = rng.normal(size=(len(labels), dim)) * spread / np.sqrt(dim)
    x = centres[labels] + noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
