"""Clustering algorithms and their scores, on synthetic embeddings with known people."""

from __future__ import annotations

import numpy as np
import pytest

from facespace import clustering
from synthetic_faces import people


@pytest.fixture(scope="module")
def faces():
    return people(12, 6, seed=3)


@pytest.mark.parametrize("method", ["agglomerative", "chinese-whispers", "components"])
def test_threshold_methods_recover_people(faces, method):
    x, y = faces
    result = clustering.cluster(x, method, threshold=1.0)
    assert result.n_clusters == 12
    assert clustering.pairwise_scores(y, result.labels)["f1"] == pytest.approx(1.0)
    assert clustering.bcubed_scores(y, result.labels)["f1"] == pytest.approx(1.0)


@pytest.mark.parametrize("linkage", clustering.LINKAGES)
def test_agglomerative_linkages(faces, linkage):
    x, y = faces
    labels = clustering.agglomerative(x, 1.0, linkage)
    assert clustering.pairwise_scores(y, labels)["f1"] == pytest.approx(1.0)


def test_kmeans_given_and_estimated_k(faces):
    x, y = faces
    given = clustering.cluster(x, "kmeans", k=12)
    assert given.n_clusters == 12
    assert clustering.bcubed_scores(y, given.labels)["f1"] > 0.9
    estimated = clustering.cluster(x, "kmeans", threshold=1.0)
    assert estimated.params["k_estimated"] and estimated.params["k"] == 12
    assert clustering.pairwise_scores(y, estimated.labels)["f1"] > 0.9


def test_threshold_extremes():
    x, _ = people(4, 3, seed=1)
    assert clustering.cluster(x, "agglomerative", threshold=1e-6).n_clusters == 12
    assert clustering.cluster(x, "components", threshold=4.0).n_clusters == 1
    assert clustering.cluster(x, "chinese-whispers", threshold=1e-6).n_clusters == 12


def test_labels_are_numbered_largest_first():
    labels = clustering.relabel_by_size(np.array([7, 3, 3, 9, 3, 9]))
    assert labels.tolist() == [2, 0, 0, 1, 0, 1]
    result = clustering.Clustering(labels, "x", {})
    assert [c.tolist() for c in result.clusters()] == [[1, 2, 4], [3, 5], [0]]


def test_empty_and_single_inputs():
    assert clustering.cluster(np.zeros((0, 128), np.float32), "agglomerative", threshold=1.0).n_clusters == 0
    one = np.ones((1, 128), np.float32)
    for method in clustering.METHODS:
        assert clustering.cluster(one, method, threshold=1.0, k=1).labels.tolist() == [0]


def test_bad_arguments():
    x, _ = people(2, 2)
    with pytest.raises(ValueError, match="unknown clustering method"):
        clustering.cluster(x, "dbscan", threshold=1.0)
    with pytest.raises(ValueError, match="threshold"):
        clustering.cluster(x, "agglomerative")
    with pytest.raises(ValueError, match="k must"):
        clustering.kmeans(x, 10)


def test_scores_against_hand_counts():
    true = [0, 0, 0, 1, 1]
    pred = [0, 0, 1, 1, 1]
    pw = clustering.pairwise_scores(true, pred)
    # true pairs: 3 + 1 = 4; predicted pairs: 1 + 3 = 4; shared: (0,1) and (3,4) = 2
    assert pw["precision"] == pytest.approx(0.5) and pw["recall"] == pytest.approx(0.5)
    b = clustering.bcubed_scores(true, pred)
    # precision per item: 1, 1, 1/3, 2/3, 2/3 ; recall: 2/3, 2/3, 1/3, 1, 1
    assert b["precision"] == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert b["recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert clustering.pairwise_scores(true, true)["f1"] == 1.0


def test_default_threshold_follows_the_number_of_faces():
    from facespace.calibration import Calibration
    from facespace.pretrained.registry import get_config

    model = "facenet-msceleb-128"
    verification = get_config(model).threshold
    calibration = Calibration.load(model)
    assert calibration.far_table, "the 128-D model ships a fitted impostor-distance table"
    graph = [clustering.default_threshold(model, "chinese-whispers", n, verification) for n in (10, 1000, 100_000)]
    assert graph[0] <= verification
    assert graph[0] > graph[1] > graph[2]  # more faces, more chances of a false link: a tighter threshold
    # exactly the distance at which 0.1 false links per face are expected among 1,000 faces
    assert graph[1] == pytest.approx(calibration.threshold(0.1 / 999))
    average = clustering.default_threshold(model, "agglomerative", 1000, verification)
    assert graph[1] < average <= verification  # average linkage tolerates more stray links
    assert clustering.default_threshold(model, "components", 1, verification) == verification
    # a model without a fitted table keeps its verification threshold
    assert clustering.default_threshold("facenet-casia-512", "components", 10_000, 1.2885) == 1.2885
    with pytest.raises(ValueError, match="unknown clustering method"):
        clustering.default_threshold(model, "dbscan", 100, verification)


# -- the kNN graph, on real LFW embeddings -------------------------------------------
@pytest.fixture(scope="module")
def lfw_faces():
    """Embeddings of the first 150 LFW people's photos (about 330 faces) and their person labels."""
    from shared_data import LFW
    from facespace import FacePipeline
    from facespace.evaluation import embed_paths

    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:150]
    paths = [img for person in people for img in sorted(person.glob("*.jpg"))]
    labels = np.array([i for i, person in enumerate(people) for _ in sorted(person.glob("*.jpg"))])
    found = embed_paths(FacePipeline(), paths, progress=False)
    return np.asarray(found.embeddings, np.float32), labels


def test_knn_graph_holds_the_threshold_pairs_among_near_neighbours(lfw_faces):
    x, _ = lfw_faces
    rows, cols, dists = clustering.threshold_graph(x, 1.0)
    every = set(zip(rows.tolist(), cols.tolist()))
    k_rows, k_cols, k_dists = clustering.knn_graph(x, 1.0, neighbours=3)
    near = set(zip(k_rows.tolist(), k_cols.tolist()))
    assert near < every and len(near) <= 3 * len(x)  # memory bounded by n*k
    assert np.all(k_rows < k_cols) and np.all(k_dists <= 1.0)
    assert clustering.knn_graph(x, 1.0, neighbours=len(x))[0].tolist() == rows.tolist()  # k = n: all of them


@pytest.mark.parametrize("method", ["agglomerative", "chinese-whispers", "components"])
def test_knn_clustering_agrees_with_all_pairs_on_lfw(lfw_faces, method):
    x, y = lfw_faces
    threshold = clustering.default_threshold("facenet-msceleb-128", method, len(x), 1.2)
    full = clustering.cluster(x, method, threshold=threshold, graph="all-pairs")
    # the library's k (32): with k = 16 Chinese whispers split a 39-photo identity in two at this threshold
    k = clustering.KNN_NEIGHBOURS
    knn = clustering.cluster(x, method, threshold=threshold, graph="knn", neighbours=k)
    assert full.params["graph"] == "all-pairs" and knn.params == {**full.params, "graph": "knn", "neighbours": k}
    assert clustering.pairwise_scores(full.labels, knn.labels)["f1"] > 0.99
    for score in (clustering.pairwise_scores, clustering.bcubed_scores):
        assert abs(score(y, knn.labels)["f1"] - score(y, full.labels)["f1"]) <= 0.005
    assert clustering.pairwise_scores(y, knn.labels)["f1"] > 0.8  # and it does cluster people


def test_knn_agglomerative_is_average_linkage(lfw_faces):
    x, _ = lfw_faces
    for threshold in (0.6, 1.0):
        full = clustering.agglomerative(x, threshold, "average", graph="all-pairs")
        assert np.array_equal(clustering.agglomerative(x, threshold, "average", graph="knn"), full)
    single = clustering.agglomerative(x, 0.8, "single", graph="knn")
    assert np.array_equal(single, clustering.agglomerative(x, 0.8, "single", graph="all-pairs"))
    with pytest.raises(clustering.OptionError, match="complete linkage"):
        clustering.agglomerative(x, 1.0, "complete", graph="knn")
    assert clustering.resolve_graph("auto", clustering.KNN_MIN_FACES) == "knn"
    assert clustering.resolve_graph("auto", clustering.KNN_MIN_FACES - 1) == "all-pairs"
    with pytest.raises(ValueError, match="graph"):
        clustering.cluster(x, "components", threshold=1.0, graph="some")
