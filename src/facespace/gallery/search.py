"""Identification: the nearest enrolled identities of a face, or "unknown".

* Distances are squared L2 between unit embeddings, as everywhere in facespace.
* :class:`facespace.calibration.Calibration` turns a distance into a
  same-person probability and a target false-accept rate into a threshold.
* :func:`build_index` picks the search structure: an exact matrix product for
  small galleries, FAISS (IVF with 8-bit scalar or product quantisation, or
  HNSW) for large ones: 128-byte codes a face, whose candidates are re-ranked exactly
  from the float vectors the index also keeps (about 650 bytes a face in all).
* A PostgreSQL gallery searches through its own pgvector HNSW index from its size threshold on
  (:meth:`~.backend.GalleryBackend.native_index`, ``index="pgvector"`` asks for it at any size).
* :class:`Identifier` combines the two: top-k identities with distance and
  probability, and open-set rejection at a threshold set for a target FAR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol, Sequence, get_args

import numpy as np

from ..calibration import Calibration
from ..comparison import distances_from_similarity
from ..errors import FacespaceError, ModelMismatchError, check_choice

if TYPE_CHECKING:
    from ..compat import CompatMap
    from .backend import GalleryBackend
    from .records import GalleryMatrix

UNKNOWN = "unknown"
#: The identity of a probe face refused for its quality (see ``Identification.with_quality``).
LOW_QUALITY = "low_quality"
#: Galleries with at least this many embeddings get a FAISS index under ``index="auto"``.
AUTO_FAISS_MIN = 50_000
#: IVF lists probed and candidates re-ranked exactly per result by default (:class:`FaissIndex`):
#: the fastest setting of ``benchmarks/search_scale.py --curve`` with recall@1 >= 0.99 against exact
#: search at 1M face-like vectors on one thread (benchmarks/results/search_scale_curve.json).
DEFAULT_NPROBE = 256
DEFAULT_RERANK = 4
#: The kinds :class:`FaissIndex` builds.
FaissKind = Literal["ivf-sq8", "ivf-pq", "hnsw", "hnsw-sq8", "ivf-flat"]
#: The search structures (``auto``: see :func:`choose_index_kind`; ``pgvector``: a PostgreSQL gallery's
#: own index, :mod:`.pg_store`); a nested Literal flattens: "auto", "exact", "pgvector", "ivf-sq8", ...
IndexKind = Literal["auto", "exact", "pgvector", FaissKind]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
#: How :class:`Identifier` scores an identity: by its nearest embedding or by their mean.
Aggregate = Literal["nearest", "centroid"]


# -- indexes -----------------------------------------------------------------
class Index(Protocol):
    """What :class:`Identifier` needs of a search structure over N unit vectors."""

    @property
    def kind(self) -> str:
        """One of :data:`INDEX_KINDS` other than ``auto``."""

    def __len__(self) -> int:
        """How many vectors are indexed."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) squared distances, nearest first, and the row numbers they belong to (-1: none)."""

    @property
    def code_bytes(self) -> int:
        """Bytes of one vector's stored code."""

    @property
    def bytes_per_vector(self) -> float:
        """Memory of the whole index divided by the vectors."""


class ExactIndex:
    """Brute force: one matrix product per block of queries. Exact, 4 bytes per dimension."""

    kind = "exact"

    @property
    def code_bytes(self) -> int:
        return 4 * self.vectors.shape[1]

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def bytes_per_vector(self) -> float:
        return 4.0 * self.vectors.shape[1]

    def search(self, queries: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n = len(self.vectors)
        k = min(k, n)
        out_d = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        for s in range(0, len(queries), block):
            sims = queries[s:s + block] @ self.vectors.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(sims), 1))
            top = np.take_along_axis(sims, idx, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            out_i[s:s + block] = np.take_along_axis(idx, order, axis=1)
            out_d[s:s + block] = distances_from_similarity(np.take_along_axis(top, order, axis=1))
        return out_d, out_i

    def all_distances(self, queries: np.ndarray) -> np.ndarray:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        return distances_from_similarity(queries @ self.vectors.T)


class FaissIndex:
    """A FAISS index over unit vectors with squared-L2 distances.

    ``ivf-sq8``: inverted lists + 8-bit scalar quantisation (D bytes a face);
    ``ivf-pq``: inverted lists + product quantisation (``code_bytes`` a face, at
    most D/2, in 8-bit sub-quantisers);
    ``hnsw`` / ``hnsw-sq8``: HNSW graph over float / 8-bit codes; ``ivf-flat``.
    ``nprobe`` (IVF) and ``ef_search`` (HNSW) trade speed for recall. ``rerank`` > 0 keeps the
    float vectors too (4 D bytes a face more) and re-ranks ``rerank`` x k candidates of the
    codes by their exact distances (FAISS ``IndexRefineFlat``), which removes the ranking
    errors of 8-bit codes; 0 searches the codes alone. Defaults (:data:`DEFAULT_NPROBE`,
    :data:`DEFAULT_RERANK`) from ``benchmarks/search_scale.py --curve`` on 1M face-like vectors,
    one thread (``benchmarks/results/search_scale_curve.json``).
    """

    def __init__(self, vectors: np.ndarray, kind: FaissKind = "ivf-sq8", code_bytes: int = 128,
                 nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32, ef_search: int = 256,
                 train_size: int = 100_000, seed: int = 0, rerank: int | None = None) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise FacespaceError("FAISS search needs faiss-cpu: pip install 'facespace[search]'") from exc
        check_choice(kind, FaissKind, "FAISS index kind")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        self.kind, self.dim = kind, d
        if nlist is None:
            nlist = int(min(max(4 * math.sqrt(n), 16), max(n // 39, 1)))
        self.nlist = nlist
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m)
        elif kind == "hnsw-sq8":
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, hnsw_m)
        else:  # ivf-sq8, ivf-pq, ivf-flat
            quantizer = faiss.IndexFlatL2(d)
            if kind == "ivf-sq8":
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit)
            elif kind == "ivf-pq":
                m = _pq_subquantizers(d, min(code_bytes, max(d // 2, 1)))
                index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8)
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist)
            self._quantizer = quantizer
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            sample = vectors if n <= train_size else vectors[rng.choice(n, train_size, replace=False)]
            index.train(sample)
        self.base = index
        if rerank is None:  # float storage (ivf-flat, hnsw) ranks exactly already
            rerank = DEFAULT_RERANK if kind in ("ivf-sq8", "ivf-pq", "hnsw-sq8") else 0
        if rerank > 0:
            index = faiss.IndexRefineFlat(index)
        index.add(vectors)
        self.index = self._searcher = index
        self.set_search(nprobe=DEFAULT_NPROBE if nprobe is None else nprobe, ef_search=ef_search, rerank=rerank)
        self._n = n

    def set_search(self, nprobe: int | None = None, ef_search: int | None = None, rerank: int | None = None) -> None:
        """Change the search breadth of a built index (lists probed, HNSW breadth, candidates re-ranked
        per result; re-ranking needs an index built with ``rerank`` > 0)."""
        if nprobe is not None and self.kind.startswith("ivf"):
            self.base.nprobe = min(int(nprobe), self.nlist)
        if ef_search is not None and self.kind.startswith("hnsw"):
            self.base.hnsw.efSearch = int(ef_search)
        if rerank is not None:
            if rerank > 0 and self.index is self.base:
                raise FacespaceError("re-ranking needs an index built with rerank > 0 (it keeps the float vectors)")
            if rerank > 0:
                self.index.k_factor = float(rerank)
            self._searcher = self.index if rerank > 0 else self.base
            self.rerank = int(rerank)

    @property
    def nprobe(self) -> int | None:
        return int(self.base.nprobe) if self.kind.startswith("ivf") else None

    def __len__(self) -> int:
        return self._n

    @property
    def code_bytes(self) -> int:
        """Bytes of one face's stored code (without ids, lists or graph links)."""
        import faiss

        if self.kind.startswith("hnsw"):
            return int(faiss.downcast_index(self.base.storage).code_size)
        return int(self.base.code_size)

    @property
    def bytes_per_vector(self) -> float:
        """Memory of the whole index (codes, ids, lists or links, codebooks) divided by the faces."""
        import faiss

        return len(faiss.serialize_index(self.index)) / max(self._n, 1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        distances, ids = self._searcher.search(queries, min(k, self._n))
        return np.clip(distances, 0, 4), ids.astype(np.int64)


def _pq_subquantizers(d: int, code_bytes: int) -> int:
    """Largest divisor of ``d`` that is at most ``code_bytes`` (one byte per sub-quantiser)."""
    for m in range(min(code_bytes, d), 0, -1):
        if d % m == 0:
            return m
    return 1


def choose_index_kind(n: int, dim: int, kind: IndexKind = "auto") -> str:
    """``auto``: exact below :data:`AUTO_FAISS_MIN` embeddings, else 128-byte codes a face
    (``ivf-sq8`` for D <= 128, ``ivf-pq`` with 128-byte codes above), re-ranked exactly
    (:class:`FaissIndex`'s defaults)."""
    check_choice(kind, IndexKind, "index")
    if kind != "auto":
        return kind
    if n < AUTO_FAISS_MIN:
        return "exact"
    return "ivf-sq8" if dim <= 128 else "ivf-pq"


def build_index(vectors: np.ndarray, kind: IndexKind = "auto", **options) -> Index:
    """An index over ``vectors`` of the given kind (see :func:`choose_index_kind`)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    chosen = choose_index_kind(len(vectors), vectors.shape[1], kind)
    if chosen == "pgvector":
        raise FacespaceError("index 'pgvector' is a PostgreSQL gallery's own index; this gallery is not one "
                             "(choose exact, auto or a FAISS index)")
    if chosen == "exact" or len(vectors) == 0:
        return ExactIndex(vectors)
    return FaissIndex(vectors, kind=chosen, **options)


# -- identification ------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    name: str
    distance: float
    probability: float

    def to_dict(self) -> dict:
        return {"name": self.name, "distance": round(self.distance, 6), "probability": round(self.probability, 6)}


@dataclass(frozen=True)
class Identification:
    """The verdict on one probe: ``identity`` is the best candidate's name or ``"unknown"``."""

    candidates: list[Candidate]
    threshold: float
    #: The probe face's quality, and whether it was below the caller's ``min_quality``: then
    #: ``identity`` is "low_quality" and the probe is neither known nor unknown.
    quality: float | None = None
    refused: bool = False

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def known(self) -> bool:
        return not self.refused and self.best is not None and self.best.distance <= self.threshold

    @property
    def identity(self) -> str:
        if self.refused:
            return LOW_QUALITY
        return self.best.name if self.known else UNKNOWN

    def with_quality(self, quality: float | None, min_quality: float | None) -> "Identification":
        """This verdict with the probe's quality; refused when it is below ``min_quality``."""
        refused = quality is not None and min_quality is not None and quality < min_quality
        return replace(self, quality=quality, refused=refused)

    def to_dict(self) -> dict:
        best = self.best
        extra = {} if self.quality is None else {"quality": round(float(self.quality), 4)}
        return {"identity": self.identity, "known": self.known, **extra,
                "distance": None if best is None else round(best.distance, 6),
                "probability": None if best is None else round(best.probability, 6),
                "threshold": round(self.threshold, 6),
                "candidates": [c.to_dict() for c in self.candidates]}


class Identifier:
    """Nearest identities among enrolled embeddings, with open-set rejection.

    ``aggregate="nearest"`` scores an identity by its closest embedding,
    ``"centroid"`` by the mean of its embeddings (one vector per identity).
    The rejection threshold is ``threshold`` if given, else the calibrated
    one for ``far`` (a search's false-accept rate over this gallery's
    identities), else the calibration's midpoint. ``index`` is an
    :data:`IndexKind`, or an :class:`Index` already built over these rows in
    label order (a backend's own, :meth:`from_gallery`). ``model`` and
    ``preprocessing_id`` record what the embeddings were made with (set by
    :meth:`from_gallery`; None when unknown).
    """

    def __init__(self, names: Sequence[str], labels: np.ndarray, vectors: np.ndarray,
                 calibration: Calibration, threshold: float | None = None, far: float | None = 0.01,
                 index: "IndexKind | Index" = "auto", aggregate: Aggregate = "nearest", *, model: str | None = None,
                 preprocessing_id: str | None = None, compat_map: "CompatMap | None" = None,
                 **index_options) -> None:
        check_choice(aggregate, Aggregate, "aggregate")
        self.names = list(names)
        self.compat_map = compat_map  # probes go through its apply_target (gallery vectors already mapped)
        self.model, self.preprocessing_id = model, preprocessing_id
        labels = np.asarray(labels, dtype=np.int64)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if aggregate == "centroid" and len(vectors):
            labels, vectors = _centroids(labels, vectors, len(self.names))
        order = np.argsort(labels, kind="stable")  # contiguous identities: per-identity minima by reduceat
        if not isinstance(index, str) and not np.array_equal(order, np.arange(len(order))):
            raise FacespaceError("a prebuilt index needs its rows in label order")
        labels, vectors = labels[order], vectors[order]
        self.labels, self.aggregate = labels, aggregate
        self._starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else labels
        self._present = labels[self._starts] if len(labels) else labels
        self.dim = vectors.shape[1]
        self.per_identity_max = int(np.bincount(labels).max()) if len(labels) else 0
        self.index = build_index(vectors, index, **index_options) if isinstance(index, str) else index
        self.calibration = calibration
        self.threshold = _rejection_threshold(calibration, threshold, far, len(self.names))
        self.far = far if threshold is None and calibration.far_table else None

    @classmethod
    def from_matrix(cls, matrix: "GalleryMatrix", calibration: Calibration, **kwargs) -> "Identifier":
        return cls(matrix.names, matrix.labels, matrix.vectors, calibration, **kwargs)

    @classmethod
    def from_gallery(cls, gallery: "GalleryBackend", model: str | None = None, preprocessing_id: str | None = None,
                     calibration: Calibration | None = None, **kwargs) -> "Identifier":
        """Load a gallery, checking it was built with ``model``/``preprocessing_id`` when given; searched
        through the backend's own index where it offers one for ``index`` (``native_index``)."""
        if model is not None and preprocessing_id is not None:
            gallery.check_compatible(model, preprocessing_id)
        if gallery.model is None:
            raise FacespaceError(f"gallery {gallery.location} is empty; enrol identities first")
        if calibration is None:
            calibration = Calibration.load(gallery.model)
        matrix = gallery.matrix()
        native = gallery.native_index(matrix, kwargs.get("index", "auto"))
        if native is not None and kwargs.get("aggregate", "nearest") == "nearest":
            kwargs["index"] = native
        return cls.from_matrix(matrix, calibration, model=gallery.model,
                               preprocessing_id=gallery.preprocessing_id, **kwargs)

    @classmethod
    def for_pipeline(cls, gallery: "GalleryBackend", pipeline, *, allow_map: bool = False, **kwargs) -> "Identifier":
        """Search ``gallery`` with faces embedded by ``pipeline`` (refused if they do not match).

        ``allow_map``: a gallery of another model is searched through the stored compatibility map
        :func:`facespace.compat.find_map` gives for (gallery model, pipeline model), when there is one
        (see :meth:`through_map`); without a map it is refused all the same.
        """
        if allow_map and gallery.model is not None and (gallery.model, gallery.preprocessing_id) != (
                pipeline.model_name, pipeline.preprocessing_id):
            compat = map_for(gallery, pipeline)
            if compat is not None:
                return cls.through_map(gallery, pipeline, compat, **kwargs)
        gallery.check_pipeline(pipeline)
        kwargs.setdefault("calibration", Calibration.load(pipeline.model_name, threshold=pipeline.threshold))
        return cls.from_gallery(gallery, **kwargs)

    @classmethod
    def through_map(cls, gallery: "GalleryBackend", pipeline, compat_map: "CompatMap", **kwargs) -> "Identifier":
        """Search ``gallery`` (the map's source model) with ``pipeline``'s faces (its target model) in
        the map's common space: gallery vectors through ``apply``, probes through ``apply_target``.

        The threshold and probabilities are the pipeline model's calibrated ones (``threshold=``
        overrides): an approximation, since mapped vectors lie a little off the space they were
        calibrated in."""
        compat_map.check(gallery.model, gallery.preprocessing_id)
        compat_map.check(pipeline.model_name, pipeline.preprocessing_id)
        kwargs.setdefault("calibration", Calibration.load(pipeline.model_name, threshold=pipeline.threshold))
        matrix = gallery.matrix()
        return cls(matrix.names, matrix.labels, compat_map.apply(matrix.vectors), model=gallery.model,
                   preprocessing_id=compat_map.space_id, compat_map=compat_map, **kwargs)

    @property
    def map_name(self) -> str | None:
        """The compatibility map searches go through (None: none, same model)."""
        return None if self.compat_map is None else self.compat_map.name

    def __len__(self) -> int:
        return len(self.names)

    def search(self, queries: np.ndarray, k: int = 5) -> list[Identification]:
        """Top-``k`` identities for each (D,) or (Q, D) query embedding."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.compat_map is not None:
            queries = self.compat_map.apply_target(queries)
        if queries.shape[1] != self.dim:
            raise ModelMismatchError(f"probe embeddings have {queries.shape[1]} values but the gallery's "
                                     f"have {self.dim}; they come from different models")
        if len(self.labels) == 0 or len(queries) == 0:
            return [Identification([], self.threshold) for _ in queries]
        k = max(1, min(k, len(self.names)))
        if isinstance(self.index, ExactIndex):
            best_d, best_l = self._exact_identities(queries, k)
        else:
            best_d, best_l = self._approx_identities(queries, k)
        out = []
        for dists, labs in zip(best_d, best_l):
            keep = labs >= 0
            probs = self.calibration.probability(dists[keep])
            out.append(Identification([Candidate(self.names[l], float(d), float(p))
                                       for l, d, p in zip(labs[keep], dists[keep], probs)], self.threshold))
        return out

    def _exact_identities(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_id = len(self.names)
        if self.per_identity_max == 1 and np.array_equal(self.labels, np.arange(n_id)):
            return self.index.search(queries, k)
        k = min(k, len(self._present))
        d_out = np.empty((len(queries), k), np.float32)
        l_out = np.empty((len(queries), k), np.int64)
        for s in range(0, len(queries), 256):
            per_id = np.minimum.reduceat(self.index.all_distances(queries[s:s + 256]), self._starts, axis=1)
            idx = np.argsort(per_id, axis=1, kind="stable")[:, :k]
            d_out[s:s + 256], l_out[s:s + 256] = np.take_along_axis(per_id, idx, axis=1), self._present[idx]
        return d_out, l_out

    def _approx_identities(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(len(self.index), max(4 * k, k * min(self.per_identity_max, 8) + 16))
        dist, ids = self.index.search(queries, depth)
        d_out = np.full((len(queries), k), np.inf, np.float32)
        l_out = np.full((len(queries), k), -1, np.int64)
        for q in range(len(queries)):
            seen: set[int] = set()
            j = 0
            for d, i in zip(dist[q], ids[q]):
                if i < 0:
                    continue
                label = int(self.labels[i])
                if label in seen:
                    continue
                seen.add(label)
                d_out[q, j], l_out[q, j] = d, label
                j += 1
                if j == k:
                    break
        return d_out, l_out


def map_for(gallery: "GalleryBackend", pipeline) -> "CompatMap | None":
    """The stored map from the gallery's embeddings to ``pipeline``'s (models and preprocessing ids), or None."""
    from ..compat import CompatMapError, find_map

    try:
        return find_map(gallery.model, pipeline.model_name, source_preprocessing=gallery.preprocessing_id,
                        target_preprocessing=pipeline.preprocessing_id)
    except CompatMapError:
        return None


def _centroids(labels: np.ndarray, vectors: np.ndarray, n_identities: int) -> tuple[np.ndarray, np.ndarray]:
    """One unit vector per identity, the normalised mean of its embeddings, labelled 0..n-1."""
    sums = np.zeros((n_identities, vectors.shape[1]), np.float64)
    np.add.at(sums, labels, vectors)
    return np.arange(n_identities), (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


def _rejection_threshold(calibration: Calibration, threshold: float | None, far: float | None,
                         n_identities: int) -> float:
    """``threshold`` if given, else the calibrated one for a search's ``far``, else the midpoint."""
    if threshold is not None:
        return float(threshold)
    if far is not None and calibration.far_table:
        return calibration.threshold(far, max(n_identities, 1))
    return calibration.midpoint
