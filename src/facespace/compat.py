"""Compatibility maps: comparing embeddings of two model versions ("harmonic embeddings").

A gallery embedded with an old model stays searchable after an upgrade when
the two models' embeddings can be brought into one space. A
:class:`CompatMap` holds two affine maps into that *common space*, each
followed by re-normalisation to unit length:

* :meth:`CompatMap.apply` takes **source**-model embeddings there,
* :meth:`CompatMap.apply_target` takes **target**-model embeddings there
  (the identity for ``ridge`` and ``procrustes``, whose common space is the
  target model's own; a trained head for ``harmonic``).

Kinds (:data:`MAP_KINDS`):

``ridge``
    closed-form ridge regression of target on source embeddings of the same
    images; the strength is chosen by held-out identities
    (:func:`choose_ridge_strength`), so no labels are needed beyond grouping.
``procrustes``
    PCA of the larger space down to the smaller dimension, then the scaled
    orthogonal map between the centred embeddings (:func:`fit_procrustes`).
``harmonic``
    a head on the new model trained with the triplet loss over mixed-version
    batches (``facespace_train.harmonic``); saved here so it is used like the others.
``mlp``
    the ridge map plus a residual one-hidden-layer network (tanh-GELU),
    ``x W + b + gelu(x W1 + b1) W2``, trained on the cosine to the target
    embeddings (``facespace_train.compat_mlp``); into the target model's own space.

Stored maps live in the map store (:func:`default_compat_dir`, ``$FACESPACE_HOME/compat``): one
``<name>.npz`` of arrays per map and ``index.json`` with each map's metadata (models, preprocessing
ids, fitting data, the sha256 of the arrays file, when it was made).
:func:`load_map` refuses a file whose sha256 differs from the index, the
registry's habit for weights. Integration is meant to be thin::

    m = find_map(gallery_model, pipeline_model)      # old -> new
    gallery_vectors = m.apply(gallery_matrix)        # once ("gallery migrate")
    probes = m.apply_target(pipeline_embeddings)     # per query
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np

from .comparison import unit_rows
from .errors import FacespaceError, ModelMismatchError, check_choice
from .files import atomic_path, atomic_write_bytes, sha256_of

__all__ = [
    "MAP_KINDS", "RIDGE_STRENGTHS", "CompatMap", "CompatMapError", "MapKind", "choose_ridge_strength", "gelu_tanh",
    "default_compat_dir", "find_map", "fit_map", "fit_procrustes", "fit_ridge", "identity_folds",
    "list_maps", "load_map", "map_name", "save_map",
]

MapKind = Literal["ridge", "procrustes", "harmonic", "mlp"]
MAP_KINDS: tuple[str, ...] = get_args(MapKind)
#: The ridge strengths tried, per fitting image (the penalty is ``strength * n * |W|^2``).
RIDGE_STRENGTHS: tuple[float, ...] = (0.0, 1e-8, 3e-8, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4,
                                      1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)
INDEX_FILE = "index.json"
INDEX_VERSION = 1
_ARRAYS = ("weight", "bias", "target_weight", "target_bias", "hidden_weight", "hidden_bias", "out_weight")


class CompatMapError(FacespaceError):
    """A compatibility map is missing, damaged, tampered with or does not fit the embeddings given."""


@dataclass(frozen=True, eq=False)
class CompatMap:
    """Affine maps of source and target embeddings into one common space (see the module notes)."""

    name: str
    kind: str
    source: str
    target: str
    source_preprocessing: str
    target_preprocessing: str
    weight: np.ndarray
    bias: np.ndarray
    target_weight: np.ndarray | None = None
    target_bias: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    hidden_weight: np.ndarray | None = None  # ``mlp``: the residual network's layers
    hidden_bias: np.ndarray | None = None
    out_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, MapKind, "compatibility map kind")
        dim = self.weight.shape[1]
        if self.bias.shape != (dim,):
            raise CompatMapError(f"map {self.name}: bias of shape {self.bias.shape}, expected ({dim},)")
        if (self.target_weight is None) != (self.target_bias is None):
            raise CompatMapError(f"map {self.name}: a target weight needs a target bias and back")
        given = [h is not None for h in (self.hidden_weight, self.hidden_bias, self.out_weight)]
        if any(given) != all(given) or all(given) != (self.kind == "mlp"):
            raise CompatMapError(f"map {self.name}: an mlp map, and only one, needs its hidden and output layers")
        if self.hidden_weight is not None and (self.hidden_weight.shape[0] != self.source_dim
                                               or self.out_weight.shape != (self.hidden_weight.shape[1], dim)):
            raise CompatMapError(f"map {self.name}: hidden layers of shapes {self.hidden_weight.shape}, "
                                 f"{self.out_weight.shape} do not fit {self.source_dim} -> {dim}")
        if self.target_weight is None and self.target_dim != dim:
            raise CompatMapError(f"map {self.name}: maps into {dim}-D but the target model's space is "
                                 f"{self.target_dim}-D and no target head is given")

    @property
    def source_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def target_dim(self) -> int:
        return int(self.weight.shape[1] if self.target_weight is None else self.target_weight.shape[0])

    @property
    def dim(self) -> int:
        """Size of the common space."""
        return int(self.weight.shape[1])

    @property
    def fingerprint(self) -> str:
        """Short sha256 of the arrays: what makes two maps the same map."""
        digest = hashlib.sha256()
        for key, array in self.arrays().items():
            digest.update(key.encode() + np.ascontiguousarray(array, "<f4").tobytes())
        return digest.hexdigest()[:12]

    @property
    def space_id(self) -> str:
        """The preprocessing id that vectors in the common space carry: the target model's own for
        ``ridge``/``procrustes`` (mapped vectors compare with its embeddings), extended by this map
        when a head changes the space (``harmonic``), so galleries never mix the two."""
        if self.target_weight is None:
            return self.target_preprocessing
        return f"{self.target_preprocessing};head={self.name}@{self.fingerprint}"

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Source-model embeddings (N, source_dim) in the common space, as unit float32 rows."""
        if self.hidden_weight is None:
            return _affine(vectors, self.weight, self.bias, f"{self.name} (source {self.source})")
        x = _checked(vectors, self.source_dim, f"{self.name} (source {self.source})")
        residual = gelu_tanh(x @ self.hidden_weight + self.hidden_bias) @ self.out_weight
        return unit_rows(x @ self.weight + self.bias + residual).astype(np.float32)

    def apply_target(self, vectors: np.ndarray) -> np.ndarray:
        """Target-model embeddings in the common space (unit rows); re-normalised only when the
        common space is the target model's own."""
        if self.target_weight is None:
            return _affine(vectors, None, None, f"{self.name} (target {self.target})", self.dim)
        return _affine(vectors, self.target_weight, self.target_bias, f"{self.name} (target {self.target})")

    def check(self, model: str, preprocessing_id: str | None = None) -> str:
        """``"source"`` or ``"target"``: which side embeddings of ``model`` (and preprocessing) are on;
        :class:`ModelMismatchError` when neither, so a wrong crop is not silently mapped."""
        for side, (m, pre) in {"source": (self.source, self.source_preprocessing),
                               "target": (self.target, self.target_preprocessing)}.items():
            if model == m and (preprocessing_id is None or preprocessing_id == pre):
                return side
        raise ModelMismatchError(f"map {self.name} joins {self.source} ({self.source_preprocessing}) and "
                                 f"{self.target} ({self.target_preprocessing}), not {model} ({preprocessing_id})")

    def to_common(self, vectors: np.ndarray, model: str, preprocessing_id: str | None = None) -> np.ndarray:
        """Embeddings of ``model`` (either side) in the common space."""
        side = self.check(model, preprocessing_id)
        return self.apply(vectors) if side == "source" else self.apply_target(vectors)

    def arrays(self) -> dict[str, np.ndarray]:
        values = (self.weight, self.bias, self.target_weight, self.target_bias, self.hidden_weight,
                  self.hidden_bias, self.out_weight)
        return {k: np.asarray(v, np.float32) for k, v in zip(_ARRAYS, values) if v is not None}


def _checked(vectors: np.ndarray, want: int, what: str) -> np.ndarray:
    """(N, want) float32 rows; a wrong width (another model's embeddings) fails loudly."""
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if x.shape[1] != want:
        raise ModelMismatchError(f"{what} takes {want}-D embeddings, got {x.shape[1]}-D")
    return x


def _affine(vectors: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, what: str,
            dim: int | None = None) -> np.ndarray:
    """``unit(x @ weight + bias)`` with the input width checked (a wrong model fails loudly)."""
    x = _checked(vectors, weight.shape[0] if weight is not None else dim, what)
    y = x if weight is None else x @ weight + bias
    return unit_rows(y).astype(np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh form (torch's ``GELU(approximate="tanh")``, what ``mlp`` maps are trained with)."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x ** 3)))


# -- fitting ------------------------------------------------------------------------------------
def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    return x - mean, mean


def _ridge_solver(source: np.ndarray, target: np.ndarray) -> Callable[[float], tuple[np.ndarray, np.ndarray]]:
    """``solve(strength) -> (weight, bias)`` for one data set: the Gram matrix is decomposed once,
    so trying many strengths costs little more than one fit."""
    xc, mx = _centred(source)
    yc, my = _centred(target)
    n, dual = len(xc), len(xc) < xc.shape[1]  # fewer images than dimensions: decompose the n x n kernel
    values, vectors = np.linalg.eigh(xc @ xc.T if dual else xc.T @ xc)
    projected = vectors.T @ (yc if dual else xc.T @ yc)

    def solve(strength: float) -> tuple[np.ndarray, np.ndarray]:
        coefficients = vectors @ (projected / np.maximum(values + strength * n, 1e-12)[:, None])
        weight = xc.T @ coefficients if dual else coefficients
        return weight.astype(np.float32), (my - mx @ weight).astype(np.float32)

    return solve


def fit_ridge(source: np.ndarray, target: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) minimising ``|x W + b - y|^2 + strength * n * |W|^2`` (closed form, centred)."""
    return _ridge_solver(source, target)(strength)


def identity_folds(groups: Sequence, folds: int = 5, seed: int = 0) -> np.ndarray:
    """A fold id per row such that each identity (group) lies in one fold only."""
    unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(unique) < folds:
        raise CompatMapError(f"{folds} folds by identity need at least {folds} identities, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_identity = np.empty(len(unique), dtype=np.int64)
    fold_of_identity[order] = np.arange(len(unique)) % folds
    return fold_of_identity[inverse]


def choose_ridge_strength(source: np.ndarray, target: np.ndarray, groups: Sequence, folds: int = 5,
                          strengths: Sequence[float] = RIDGE_STRENGTHS) -> tuple[float, dict[float, float]]:
    """The strength with the highest mean cosine of mapped vs target embedding on held-out identities,
    and every strength's score (cross-validated by identity, so no face informs its own map)."""
    fold = identity_folds(groups, folds)
    x, y = np.asarray(source, dtype=np.float32), np.asarray(target, dtype=np.float32)
    cosines: dict[float, list[np.ndarray]] = {float(s): [] for s in strengths}
    for k in range(folds):
        train, test = fold != k, fold == k
        solve = _ridge_solver(x[train], y[train])
        for strength in cosines:
            weight, bias = solve(strength)
            cosines[strength].append(np.sum(unit_rows(x[test] @ weight + bias) * unit_rows(y[test]), axis=1))
    scores = {s: float(np.mean(np.concatenate(c))) for s, c in cosines.items()}
    best = max(scores, key=lambda s: (scores[s], s))  # ties: the stronger (simpler) map
    return best, scores


def fit_procrustes(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the scaled orthogonal map after PCA of the larger space to the smaller one.

    With the larger side reduced to its top principal directions ``P``, the
    rotation ``R`` (and scale) best matching the centred embeddings is the
    orthogonal Procrustes solution; the map is ``(x - mean_x) s R (P or P^T) + mean_y``.
    """
    xc, mx = _centred(source)
    yc, my = _centred(target)
    small = min(xc.shape[1], yc.shape[1])
    big_is_source = xc.shape[1] >= yc.shape[1]
    big = xc if big_is_source else yc
    basis = np.eye(small) if xc.shape[1] == yc.shape[1] else \
        np.linalg.svd(big, full_matrices=False)[2][:small].T  # (big_dim, small) principal directions
    x_low = xc @ basis if big_is_source else xc
    y_low = yc if big_is_source else yc @ basis
    u, s, vt = np.linalg.svd(x_low.T @ y_low)
    rotation = u @ vt
    scale = s.sum() / np.sum(x_low ** 2)
    weight = scale * (basis @ rotation if big_is_source else rotation @ basis.T)
    return weight.astype(np.float32), (my - mx @ weight).astype(np.float32)


def map_name(source: str, target: str, kind: str) -> str:
    return f"{source}-to-{target}-{kind}"


def fit_map(kind: str, source: np.ndarray, target: np.ndarray, *, source_model: str, target_model: str,
            source_preprocessing: str, target_preprocessing: str, groups: Sequence | None = None,
            fitted_on: dict | None = None) -> CompatMap:
    """A ``ridge`` or ``procrustes`` map from paired embeddings of the same images by both models.

    ``groups`` (identities) are needed for ``ridge``: its strength is chosen on held-out identities.
    """
    check_choice(kind, ("ridge", "procrustes"), "fitted map kind")
    if len(source) != len(target):
        raise CompatMapError(f"{len(source)} source but {len(target)} target embeddings: pairs needed")
    params: dict = {}
    if kind == "ridge":
        if groups is None:
            raise CompatMapError("a ridge map chooses its strength on held-out identities: give groups")
        strength, scores = choose_ridge_strength(source, target, groups)
        weight, bias = fit_ridge(source, target, strength)
        params = {"strength": strength, "strength_rule": "max held-out mean cosine, 5 folds by identity",
                  "cv_mean_cosine": {f"{k:g}": v for k, v in scores.items()}}
    else:
        weight, bias = fit_procrustes(source, target)
        params = {"pca_dim": int(min(source.shape[1], target.shape[1]))}
    meta = {"params": params, "fitted_on": {"images": int(len(source)), **(fitted_on or {}), "pairs": int(len(source))}}
    return CompatMap(name=map_name(source_model, target_model, kind), kind=kind, source=source_model,
                     target=target_model, source_preprocessing=source_preprocessing,
                     target_preprocessing=target_preprocessing, weight=weight, bias=bias, meta=meta)


# -- the store of maps --------------------------------------------------------------------------
def default_compat_dir() -> Path:
    """The map store: ``$FACESPACE_COMPAT_DIR``, else ``$FACESPACE_HOME/compat``. Maps are fitted
    data (``facespace fit-maps DIR``), kept beside the weights, not files the package carries."""
    env = os.environ.get("FACESPACE_COMPAT_DIR")
    if env:
        return Path(env)
    from .pretrained.weights import cache_dir

    return cache_dir() / "compat"


def _read_index(folder: Path) -> dict:
    path = folder / INDEX_FILE
    if not path.is_file():
        return {"version": INDEX_VERSION, "maps": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CompatMapError(f"{path}: unreadable map index ({exc})") from None


def _write_index(folder: Path, index: dict) -> None:
    atomic_write_bytes(folder / INDEX_FILE, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


def save_map(compat: CompatMap, folder: str | os.PathLike | None = None) -> Path:
    """Write ``<name>.npz`` and its entry in ``index.json`` (sha256, models, fitting data, created)."""
    folder = Path(folder) if folder is not None else default_compat_dir()
    path = folder / f"{compat.name}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **compat.arrays())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    entry = {**compat.meta, "name": compat.name, "kind": compat.kind, "file": path.name,
             "sha256": sha256_of(path), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "source": {"model": compat.source, "preprocessing_id": compat.source_preprocessing,
                        "dim": compat.source_dim},
             "target": {"model": compat.target, "preprocessing_id": compat.target_preprocessing,
                        "dim": compat.target_dim},
             "space_dim": compat.dim, "target_head": compat.target_weight is not None,
             "space_id": compat.space_id}
    index = _read_index(folder)
    index.setdefault("maps", {})[compat.name] = entry
    _write_index(folder, index)
    return path


def list_maps(folder: str | os.PathLike | None = None) -> list[dict]:
    """The metadata of every stored map (no arrays are read)."""
    folder = Path(folder) if folder is not None else default_compat_dir()
    return [dict(entry) for _, entry in sorted(_read_index(folder).get("maps", {}).items())]


def load_map(name: str, folder: str | os.PathLike | None = None) -> CompatMap:
    """A stored map, its arrays file verified against the sha256 in the index."""
    folder = Path(folder) if folder is not None else default_compat_dir()
    maps = _read_index(folder).get("maps", {})
    if name not in maps:
        raise CompatMapError(f"no compatibility map {name!r} in {folder}; stored: {', '.join(sorted(maps)) or 'none'}")
    entry = maps[name]
    path = folder / entry["file"]
    if not path.is_file():
        raise CompatMapError(f"map {name}: {path} is missing")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise CompatMapError(f"map {name}: {path} has sha256 {digest}, the index says {entry['sha256']}; "
                             "the file was changed or damaged, refusing it")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = {k: v for k, v in entry.items() if k not in ("name", "kind", "source", "target")}
    return CompatMap(name=name, kind=entry["kind"], source=entry["source"]["model"],
                     target=entry["target"]["model"], source_preprocessing=entry["source"]["preprocessing_id"],
                     target_preprocessing=entry["target"]["preprocessing_id"], meta=meta,
                     **{k: arrays.get(k) for k in _ARRAYS})


def find_map(source_model: str, target_model: str, *, kind: str | None = None,
             source_preprocessing: str | None = None, target_preprocessing: str | None = None,
             target_space_only: bool = False, folder: str | os.PathLike | None = None) -> CompatMap:
    """The stored map from ``source_model`` to ``target_model`` (optionally of one kind and for the
    given preprocessing ids); of several, the one ranked first by its celeba validation score
    (``validation.rank_score`` in the index, measured without LFW).

    ``target_space_only`` keeps only maps without a target head, whose mapped vectors compare with
    the target model's plain embeddings (what migrating a gallery to the new model needs).
    """
    if kind is not None:
        check_choice(kind, MapKind, "compatibility map kind")
    fits = [e for e in list_maps(folder)
            if e["source"]["model"] == source_model and e["target"]["model"] == target_model
            and (kind is None or e["kind"] == kind) and not (target_space_only and e.get("target_head"))
            and source_preprocessing in (None, e["source"]["preprocessing_id"])
            and target_preprocessing in (None, e["target"]["preprocessing_id"])]
    if not fits:
        other_crops = sorted({f"[{e['source']['preprocessing_id']}] -> [{e['target']['preprocessing_id']}]"
                              for e in list_maps(folder) if e["source"]["model"] == source_model
                              and e["target"]["model"] == target_model})
        raise CompatMapError(f"no compatibility map from {source_model} to {target_model}"
                             + (f" of kind {kind}" if kind else "") + f" is stored in {folder or default_compat_dir()}"
                             + (f" for [{source_preprocessing or '*'}] -> [{target_preprocessing or '*'}]; the stored "
                                f"ones were fitted for {'; '.join(other_crops)}" if other_crops else "")
                             + " (fit them on photos of your own with `facespace fit-maps DIR`)")
    best = max(fits, key=lambda e: (e.get("validation", {}).get("rank_score", float("-inf")), e["name"]))
    return load_map(best["name"], folder)
