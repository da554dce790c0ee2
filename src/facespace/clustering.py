"""Grouping face embeddings by person, without enrolled identities.

Three families, all on squared L2 distance between unit embeddings:

* :func:`agglomerative` – hierarchical clustering (average, complete or
  single linkage) cut at a distance threshold;
* :func:`kmeans` – spherical k-means with k-means++ seeding, ``k`` given or
  estimated (:func:`estimate_k`);
* graph methods on the threshold graph (an edge joins two faces at most
  ``threshold`` apart): :func:`chinese_whispers` and
  :func:`connected_components`.

The pair graph (``graph``) is all pairs (N^2 work; agglomerative also N^2/2 distances in
memory) or, for large collections, the k-nearest-neighbour graph from FAISS
(:func:`knn_graph`): each face's ``neighbours`` nearest, kept where within the threshold,
so memory is bounded by N*k. On it agglomerative merges, smallest average distance first,
only clusters that a neighbour edge joins, with the exact average linkage computed from the
clusters' vector sums (for unit vectors the mean squared distance of two clusters is
2 - 2 (sum_A . sum_B) / (|A| |B|)); single linkage is the components. ``graph="auto"`` takes the
kNN graph from :data:`KNN_MIN_FACES` faces on.

:func:`cluster` dispatches by name; labels are renumbered so cluster 0 is the
largest. :func:`default_threshold` chooses a method's threshold for a given
number of faces from the model's impostor-distance calibration: a threshold
that is right for comparing two faces (the verification threshold) links
every face to several strangers once there are thousands of faces, and
chaining methods then merge everyone. :func:`pairwise_scores` and :func:`bcubed_scores` measure a
clustering against true labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .comparison import distances_from_similarity, unit_rows
from .errors import OptionError, check_choice

#: The clustering methods :func:`cluster` dispatches to.
ClusterMethod = Literal["agglomerative", "kmeans", "chinese-whispers", "components"]
METHODS: tuple[str, ...] = get_args(ClusterMethod)
#: How :func:`agglomerative` measures the distance of two clusters.
Linkage = Literal["average", "complete", "single"]
LINKAGES: tuple[str, ...] = get_args(Linkage)
#: Which pairs the methods look at: all of them, or each face's nearest neighbours (``auto``: by size).
GraphKind = Literal["auto", "all-pairs", "knn"]
GRAPHS: tuple[str, ...] = get_args(GraphKind)
#: ``graph="auto"`` uses the kNN graph from this many faces (all-pairs agglomerative would hold
#: 1.6 GB of distances at 20,000 faces).
KNN_MIN_FACES = 20_000
#: Neighbours per face in the kNN graph (benchmarks/results/cluster_scale.json: on LFW the kNN
#: results are within 0.005 F1 of all pairs).
KNN_NEIGHBOURS = 32
#: Up to this many faces the kNN graph is exact (a flat index); above, FAISS IVF-Flat.
KNN_EXACT_MAX = 50_000
#: Inverted lists probed by the IVF kNN search (of about 4 sqrt(N)).
KNN_NPROBE = 32

#: Expected number of false links (pairs of different people within the threshold) per face that
#: each method tolerates when :func:`default_threshold` picks its threshold. A chaining method joins
#: two people through a single false link; average linkage needs the mean distance of two clusters
#: under the threshold, so single stray links do not merge them. k-means uses the threshold only to
#: estimate k with Chinese whispers. Chosen on LFW (benchmarks/results/cluster_lfw.json).
FALSE_LINKS_PER_FACE = {"agglomerative": 1.0, "chinese-whispers": 0.1, "components": 0.1, "kmeans": 0.1}


@dataclass
class Clustering:
    """Cluster labels of N faces (0 = largest cluster) and how they were made."""

    labels: np.ndarray
    method: str
    params: dict

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def clusters(self) -> list[np.ndarray]:
        """Member indices of each cluster, largest first."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.n_clusters + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(self.n_clusters)]


def _unit(embeddings: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got {x.shape}")
    return unit_rows(x)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..C-1, largest cluster first (ties: first appearance)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return labels.astype(np.int64)
    uniq, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    return rank[inverse.ravel()]


# -- agglomerative ---------------------------------------------------------------
def agglomerative(embeddings: np.ndarray, threshold: float, linkage: Linkage = "average",
                  graph: GraphKind = "auto", neighbours: int = KNN_NEIGHBOURS,
                  nearest: Neighbours | None = None) -> np.ndarray:
    """Hierarchical clustering cut where the linkage distance exceeds ``threshold``.

    On all pairs it needs the N(N-1)/2 pair distances in memory (8 bytes each: 0.7 GB for
    13,000 faces); on the kNN graph (average or single linkage) memory is N*k (see the module).
    """
    from scipy.cluster.hierarchy import fcluster, linkage as scipy_linkage

    check_choice(linkage, Linkage, "linkage")
    x = _unit(embeddings)
    n = len(x)
    if resolve_graph(graph, n) == "knn":
        if linkage == "complete":
            raise OptionError("complete linkage needs all pairs; use graph='all-pairs' or average/single linkage")
        if linkage == "single":
            return connected_components(x, threshold, graph="knn", neighbours=neighbours, nearest=nearest)
        return graph_average_linkage(x, threshold, neighbours, nearest)
    if n < 2:
        return np.zeros(n, np.int64)
    condensed = np.empty(n * (n - 1) // 2, np.float64)
    start = 0
    for i in range(n - 1):  # row by row keeps peak memory at one condensed matrix
        row = distances_from_similarity(x[i + 1:] @ x[i])
        condensed[start:start + len(row)] = row
        start += len(row)
    tree = scipy_linkage(condensed, method=linkage)
    del condensed
    return relabel_by_size(fcluster(tree, t=threshold, criterion="distance"))


# -- k-means ------------------------------------------------------------------
def kmeans(embeddings: np.ndarray, k: int, n_init: int = 4, max_iter: int = 50, seed: int = 0,
           tol: float = 1e-5) -> np.ndarray:
    """Spherical k-means (centres renormalised each step), k-means++ seeding, best of ``n_init``."""
    x = _unit(embeddings)
    n = len(x)
    if not 1 <= k <= max(n, 1):
        raise ValueError(f"k must lie between 1 and the number of faces ({n}), got {k}")
    if n == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    best_labels, best_cost = None, np.inf
    for _ in range(n_init):
        centres = _kmeans_pp(x, k, rng)
        labels = np.full(n, -1, np.int64)
        for _ in range(max_iter):
            sims = _best_centre(x, centres)
            new, score = sims
            moved = np.mean(new != labels)
            labels = new
            sums = np.zeros_like(centres, dtype=np.float64)
            np.add.at(sums, labels, x)
            counts = np.bincount(labels, minlength=k)
            empty = counts == 0
            if empty.any():  # re-seed empty clusters with the worst-fitting faces
                worst = np.argsort(score)[: int(empty.sum())]
                sums[empty] = x[worst]
            centres = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
            if moved <= tol:
                break
        labels, score = _best_centre(x, centres)
        cost = float(np.sum(distances_from_similarity(score)))
        if cost < best_cost:
            best_labels, best_cost = labels, cost
    return relabel_by_size(best_labels)


def _best_centre(x: np.ndarray, centres: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    labels = np.empty(len(x), np.int64)
    score = np.empty(len(x), np.float32)
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ centres.T
        labels[s:s + block] = np.argmax(sims, axis=1)
        score[s:s + block] = sims[np.arange(len(sims)), labels[s:s + block]]
    return labels, score


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++: of 2 + log(k) candidates drawn by D^2 weighting, keep the one that
    lowers the total squared distance most (plain k-means++ often seeds a person twice)."""
    n = len(x)
    trials = 2 + int(np.log(k))
    chosen = [int(rng.integers(n))]
    closest = distances_from_similarity(x @ x[chosen[0]]).astype(np.float64)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            chosen.append(int(rng.integers(n)))
            continue
        candidates = rng.choice(n, size=trials, p=closest / total)
        dist = distances_from_similarity(x[candidates] @ x.T)
        np.minimum(dist, closest[None, :], out=dist)
        best = int(np.argmin(dist.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = dist[best].astype(np.float64)
    return x[chosen].copy()


def estimate_k(embeddings: np.ndarray, threshold: float, graph: GraphKind = "auto",
               nearest: "Neighbours | None" = None) -> int:
    """Number of people, estimated as the number of Chinese-whispers clusters at ``threshold``."""
    if not len(embeddings):
        return 0
    return max(1, int(chinese_whispers(embeddings, threshold, graph=graph, nearest=nearest).max()) + 1)


# -- graph methods ----------------------------------------------------------------
def threshold_graph(embeddings: np.ndarray, threshold: float, block: int = 2048
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j with squared distance <= ``threshold``: (rows, cols, distances)."""
    x = _unit(embeddings)
    rows, cols, dists = [], [], []
    limit = 1.0 - threshold / 2.0  # d <= t  <=>  cos >= 1 - t/2
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ x.T
        r, c = np.nonzero(sims >= limit)
        r = r + s
        keep = c > r
        rows.append(r[keep])
        cols.append(c[keep])
        dists.append(distances_from_similarity(sims[r[keep] - s, c[keep]]))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def resolve_graph(graph: GraphKind, n: int) -> str:
    """``all-pairs`` or ``knn``: ``auto`` takes the kNN graph from :data:`KNN_MIN_FACES` faces."""
    check_choice(graph, GraphKind, "graph")
    if graph != "auto":
        return graph
    return "knn" if n >= KNN_MIN_FACES else "all-pairs"


#: Each face's nearest neighbours: (N, k+1) squared distances and row numbers (itself among them;
#: -1 where none), from :func:`nearest_neighbours`.
Neighbours = tuple[np.ndarray, np.ndarray]


def nearest_neighbours(embeddings: np.ndarray, neighbours: int = KNN_NEIGHBOURS, block: int = 32_768) -> Neighbours:
    """Each face's ``neighbours`` nearest (and itself): exact (a flat index) up to
    :data:`KNN_EXACT_MAX` faces, FAISS IVF-Flat (:data:`KNN_NPROBE` lists probed) above. N*(k+1)
    distances and ids are all it keeps; pass them as ``nearest`` to cluster one collection
    several ways (or at several thresholds) without searching again."""
    from .gallery.search import build_index

    if neighbours < 1:
        raise OptionError(f"neighbours must be at least 1, got {neighbours!r}")
    x = _unit(embeddings)
    n = len(x)
    index = build_index(x, "exact") if n <= KNN_EXACT_MAX else build_index(x, "ivf-flat", nprobe=KNN_NPROBE)
    k = min(neighbours + 1, n)  # the face itself comes back too
    dists, ids = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for s in range(0, n, block):
        dists[s:s + block], ids[s:s + block] = index.search(x[s:s + block], k)
    return dists, ids


def knn_graph(embeddings: np.ndarray, threshold: float, neighbours: int = KNN_NEIGHBOURS,
              nearest: Neighbours | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j where one is among the other's ``neighbours`` nearest and they are at most
    ``threshold`` apart: (rows, cols, distances), at most N*k of them (``nearest``: from
    :func:`nearest_neighbours`, else searched here)."""
    n = len(embeddings)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    d, j = nearest if nearest is not None else nearest_neighbours(embeddings, neighbours)
    i = np.broadcast_to(np.arange(n)[:, None], j.shape)
    keep = (j >= 0) & (j != i) & (d <= threshold)
    lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    key, first = np.unique(lo.astype(np.int64) * n + hi, return_index=True)
    return key // n, key % n, d[keep][first].astype(np.float32)


def pair_graph(embeddings: np.ndarray, threshold: float, graph: GraphKind = "auto",
               neighbours: int = KNN_NEIGHBOURS, nearest: Neighbours | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges (rows, cols, distances; i < j, within ``threshold``) of the graph ``graph`` says."""
    if resolve_graph(graph, len(embeddings)) == "knn":
        return knn_graph(embeddings, threshold, neighbours, nearest)
    return threshold_graph(embeddings, threshold)


def graph_average_linkage(embeddings: np.ndarray, threshold: float, neighbours: int = KNN_NEIGHBOURS,
                          nearest: Neighbours | None = None) -> np.ndarray:
    """Average-linkage clustering over the kNN graph: repeatedly merge the two joined clusters with
    the smallest exact average squared distance (from their vector sums) while it is <= ``threshold``."""
    import heapq

    x = _unit(embeddings).astype(np.float64)
    n = len(x)
    rows, cols, dists = knn_graph(x, threshold, neighbours, nearest)
    adjacent: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(rows.tolist(), cols.tolist()):
        adjacent[a].add(b)
        adjacent[b].add(a)
    sums, sizes, owner = {}, [1] * n, np.arange(n)
    version = [0] * n  # bumped when a cluster grows or goes: heap entries of older versions are stale
    heap = [(d, a, b, 0, 0) for d, a, b in zip(dists.astype(np.float64).tolist(), rows.tolist(), cols.tolist())]
    heapq.heapify(heap)
    while heap:
        d, a, b, va, vb = heapq.heappop(heap)
        if d > threshold:
            break
        if va != version[a] or vb != version[b]:
            continue
        if sizes[a] < sizes[b]:
            a, b = b, a
        sums[a] = sums.get(a, x[a]) + sums.pop(b, x[b])
        sizes[a] += sizes[b]
        version[a] += 1
        version[b] = -1
        owner[b] = a
        adjacent[a] |= adjacent[b]
        adjacent[a] -= {a, b}
        for c in adjacent[b] - {a}:
            adjacent[c].discard(b)
            adjacent[c].add(a)
        adjacent[b] = set()
        mean = sums[a] / sizes[a]
        for c in adjacent[a]:
            dc = 2.0 - 2.0 * float(mean @ sums.get(c, x[c])) / sizes[c]
            if dc <= threshold:
                heapq.heappush(heap, (dc, a, c, version[a], version[c]))
    return relabel_by_size(_roots(owner))


def _roots(owner: np.ndarray) -> np.ndarray:
    """The final cluster of each face, following ``owner`` links (each merged cluster points at its survivor)."""
    roots = owner.copy()
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


def connected_components(embeddings: np.ndarray, threshold: float, graph: GraphKind = "auto",
                         neighbours: int = KNN_NEIGHBOURS, nearest: Neighbours | None = None) -> np.ndarray:
    """Faces linked by any chain of pairs at most ``threshold`` apart (= single linkage)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    n = len(embeddings)
    rows, cols, _ = pair_graph(embeddings, threshold, graph, neighbours, nearest)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = scipy_components(graph, directed=False)
    return relabel_by_size(labels)


def chinese_whispers(embeddings: np.ndarray, threshold: float, iterations: int = 20, seed: int = 0,
                     graph: GraphKind = "auto", neighbours: int = KNN_NEIGHBOURS,
                     nearest: Neighbours | None = None) -> np.ndarray:
    """Chinese whispers (Biemann 2006) on the threshold graph, edges weighted by cosine similarity.

    Every face starts in its own class; in random order each face adopts the
    class with the largest total edge weight among its neighbours (ties: the
    smallest class number), until no face changes or ``iterations`` passes are done.
    """
    n = len(embeddings)
    rows, cols, dists = pair_graph(embeddings, threshold, graph, neighbours, nearest)
    weights = 1.0 - dists / 2.0
    src = np.concatenate([rows, cols])
    dst = np.concatenate([cols, rows])
    w = np.concatenate([weights, weights]).astype(np.float64)
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    bounds = np.searchsorted(src, np.arange(n + 1)).tolist()
    dst_list, w_list = dst.tolist(), w.tolist()  # plain lists: a face's few neighbours are summed in Python
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    linked = np.flatnonzero(np.diff(bounds) > 0)
    for _ in range(iterations):
        changed = 0
        for i in rng.permutation(linked).tolist():
            new = _heaviest_class(labels, dst_list, w_list, bounds[i], bounds[i + 1])
            if new != labels[i]:
                labels[i] = new
                changed += 1
        if changed == 0:
            break
    return relabel_by_size(np.asarray(labels, np.int64))


def _heaviest_class(labels: list[int], dst: list[int], w: list[float], start: int, stop: int) -> int:
    """The class with the largest summed edge weight among a face's neighbours (ties: the smallest)."""
    if stop - start == 1:
        return labels[dst[start]]
    totals: dict[int, float] = {}
    for j in range(start, stop):
        label = labels[dst[j]]
        totals[label] = totals.get(label, 0.0) + w[j]
    best = max(totals.values())
    return min(label for label, total in totals.items() if total == best)


# -- dispatch ----------------------------------------------------------------------
def default_threshold(model: str, method: ClusterMethod, n_faces: int, verification_threshold: float) -> float:
    """The squared-distance threshold for clustering ``n_faces`` faces of ``model`` with ``method``.

    The distance at which a face is expected to have ``FALSE_LINKS_PER_FACE[method]`` false links
    among the other faces (a per-comparison false-accept rate of links / (n - 1)), read from the
    model's impostor-distance calibration (:class:`facespace.calibration.Calibration`); never above
    the verification threshold. Without a calibrated FAR table, the verification threshold.
    """
    from .calibration import Calibration

    check_choice(method, ClusterMethod, "clustering method")
    calibration = Calibration.load(model, threshold=verification_threshold)
    if not calibration.far_table or n_faces < 2:
        return float(verification_threshold)
    far = min(FALSE_LINKS_PER_FACE[method] / (n_faces - 1), 0.5)
    return float(min(calibration.threshold(far), verification_threshold))


def cluster(embeddings: np.ndarray, method: ClusterMethod = "agglomerative", threshold: float | None = None,
            k: int | None = None, linkage: Linkage = "average", seed: int = 0, graph: GraphKind = "auto",
            neighbours: int = KNN_NEIGHBOURS, nearest: Neighbours | None = None) -> Clustering:
    """Cluster embeddings by ``method`` (one of :data:`METHODS`).

    ``threshold`` (squared distance) is needed by every method except
    k-means with ``k`` given; k-means without ``k`` estimates it. ``graph`` picks all pairs or
    the kNN graph of ``neighbours`` a face (``auto``: by size, :func:`resolve_graph`; ``nearest``:
    the neighbours already found by :func:`nearest_neighbours`); it is recorded in ``params``.
    """
    check_choice(method, ClusterMethod, "clustering method")
    x = _unit(embeddings) if len(embeddings) else np.zeros((0, 1), np.float32)
    if len(x) == 0:
        return Clustering(np.zeros(0, np.int64), method, {})
    if threshold is None and not (method == "kmeans" and k is not None):
        raise ValueError(f"{method} clustering needs a distance threshold")
    chosen = resolve_graph(graph, len(x))
    on_graph = {"graph": chosen, **({"neighbours": neighbours} if chosen == "knn" else {})}
    if method == "agglomerative":
        labels = agglomerative(x, threshold, linkage, graph=chosen, neighbours=neighbours, nearest=nearest)
        params = {"threshold": threshold, "linkage": linkage, **on_graph}
    elif method == "kmeans":
        params = {"k": k, "k_estimated": k is None}
        if k is None:
            k = estimate_k(x, threshold, graph=chosen, nearest=nearest)
            params.update(k=k, threshold=threshold, **on_graph)
        labels = kmeans(x, min(k, len(x)), n_init=4 if len(x) * k <= 10_000_000 else 1, seed=seed)
    elif method == "chinese-whispers":
        labels = chinese_whispers(x, threshold, seed=seed, graph=chosen, neighbours=neighbours, nearest=nearest)
        params = {"threshold": threshold, **on_graph}
    else:
        labels = connected_components(x, threshold, graph=chosen, neighbours=neighbours, nearest=nearest)
        params = {"threshold": threshold, **on_graph}
    return Clustering(labels=labels, method=method, params=params)


# -- evaluation ----------------------------------------------------------------------
def _contingency(true, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, t = np.unique(np.asarray(true), return_inverse=True)
    _, p = np.unique(np.asarray(pred), return_inverse=True)
    t, p = t.ravel(), p.ravel()
    pair = t.astype(np.int64) * (p.max() + 1) + p
    _, cell_counts = np.unique(pair, return_counts=True)
    cells = np.unique(pair)
    return cell_counts, np.bincount(t)[cells // (p.max() + 1)], np.bincount(p)[cells % (p.max() + 1)]


def pairwise_scores(true, pred) -> dict:
    """Pairwise precision, recall and F1: over all pairs of faces put in one cluster / of one person."""
    nij, _, _ = _contingency(true, pred)
    true_sizes = np.unique(np.asarray(true), return_counts=True)[1].astype(np.float64)
    pred_sizes = np.unique(np.asarray(pred), return_counts=True)[1].astype(np.float64)
    tp = float(np.sum(nij * (nij - 1.0) / 2))
    pred_pairs = float(np.sum(pred_sizes * (pred_sizes - 1) / 2))
    true_pairs = float(np.sum(true_sizes * (true_sizes - 1) / 2))
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def bcubed_scores(true, pred) -> dict:
    """BCubed precision, recall and F1 (Bagga & Baldwin 1998), averaged over faces."""
    nij, ti, pj = _contingency(true, pred)
    n = float(len(np.asarray(true)))
    if n == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = float(np.sum(nij * nij / pj) / n)
    recall = float(np.sum(nij * nij / ti) / n)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
