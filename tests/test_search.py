"""Identification on synthetic embeddings: exact and FAISS search, calibration, open-set rejection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facespace.errors import FacespaceError, ModelMismatchError
from facespace.calibration import Calibration, threshold_at_far
from facespace.gallery import Gallery, Identifier, build_index
from facespace.gallery.search import ExactIndex, FaissIndex, choose_index_kind
from synthetic_faces import people, unit

CAL = Calibration(model="m", slope=10.0, midpoint=1.0, far_table={1e-3: 0.8, 1e-2: 1.0, 1e-1: 1.3})


def split(n_people=50, per=3, seed=0):
    x, y = people(n_people, per, seed=seed)
    first = np.r_[True, y[1:] != y[:-1]]
    return x[~first], y[~first], x[first], y[first]  # gallery: 2 per person; probes: 1 per person


def test_exact_top_k_and_probabilities():
    gx, gy, px, py = split()
    ident = Identifier([f"p{i}" for i in range(50)], gy, gx, CAL, threshold=1.0)
    results = ident.search(px, k=5)
    assert [r.identity for r in results] == [f"p{i}" for i in py]
    for r in results:
        assert len(r.candidates) == 5
        d = [c.distance for c in r.candidates]
        assert d == sorted(d) and len({c.name for c in r.candidates}) == 5
        assert r.best.probability > 0.9 and r.candidates[1].probability < 0.1
    single = ident.search(px[0], k=100)[0]
    assert len(single.candidates) == 50  # k is capped at the number of identities


def test_open_set_rejection():
    gx, gy, px, _ = split()
    ident = Identifier([f"p{i}" for i in range(50)], gy, gx, CAL, threshold=1.0)
    strangers = unit(np.random.default_rng(9), 20)
    assert all(r.identity == "unknown" and not r.known for r in ident.search(strangers))
    d = ident.search(strangers)[0].to_dict()
    assert d["identity"] == "unknown" and d["candidates"][0]["name"].startswith("p")


def test_centroid_matches_nearest():
    gx, gy, px, py = split()
    names = [f"p{i}" for i in range(50)]
    a = Identifier(names, gy, gx, CAL, threshold=1.0, aggregate="centroid")
    assert [r.identity for r in a.search(px)] == [f"p{i}" for i in py]


def test_shuffled_labels_are_handled():
    gx, gy, px, py = split()
    order = np.random.default_rng(1).permutation(len(gy))
    ident = Identifier([f"p{i}" for i in range(50)], gy[order], gx[order], CAL, threshold=1.0)
    assert [r.identity for r in ident.search(px)] == [f"p{i}" for i in py]


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads crawl on a busy machine; these indexes are tiny anyway."""
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-pq", "hnsw-sq8", "hnsw", "ivf-flat"])
def test_faiss_agrees_with_exact(kind):
    x, y = people(400, 3, seed=2)
    first = np.r_[True, y[1:] != y[:-1]]
    names = [f"p{i}" for i in range(400)]
    exact = Identifier(names, y[~first], x[~first], CAL, threshold=1.0, index="exact")
    approx = Identifier(names, y[~first], x[~first], CAL, threshold=1.0, index=kind, nlist=16, nprobe=8,
                        code_bytes=16)
    assert isinstance(approx.index, FaissIndex)
    e = [r.identity for r in exact.search(x[first], k=3)]
    a = [r.identity for r in approx.search(x[first], k=3)]
    assert np.mean(np.array(e) == np.array(a)) >= 0.97
    r = approx.search(x[first][:1], k=3)[0]
    assert abs(r.best.distance - exact.search(x[first][:1])[0].best.distance) < 0.05


def test_index_choice_and_code_size():
    assert choose_index_kind(1000, 128) == "exact"
    assert choose_index_kind(10**6, 128) == "ivf-sq8"
    assert choose_index_kind(10**6, 512) == "ivf-pq"
    assert choose_index_kind(10, 512, "hnsw") == "hnsw"
    with pytest.raises(ValueError):
        choose_index_kind(10, 128, "annoy")
    x = unit(np.random.default_rng(0), 2000)
    assert isinstance(build_index(x[:100]), ExactIndex)
    assert build_index(x[:100]).code_bytes == 512
    sq = build_index(x, "ivf-sq8", nlist=8, rerank=0)
    assert sq.code_bytes == 128  # 8 bits a dimension for 128-d embeddings
    assert 128 < sq.bytes_per_vector < 160  # plus ids and the coarse centroids
    reranked = build_index(x, "ivf-sq8", nlist=8)  # the default keeps the float vectors for exact re-ranking
    assert reranked.rerank > 0 and reranked.code_bytes == 128 and 128 + 512 < reranked.bytes_per_vector < 160 + 512
    assert build_index(x, "hnsw-sq8").code_bytes == 128
    x512 = unit(np.random.default_rng(0), 300, dim=512)
    pq = build_index(x512, "ivf-pq", nlist=2)
    assert pq.code_bytes == 128 and pq.base.pq.M == 128  # 128 one-byte codes for 512-d embeddings


def test_calibration_fit_and_far_threshold():
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.6, 0.15, 3000)
    impostor = rng.normal(1.6, 0.2, 30000)
    d = np.r_[genuine, impostor]
    same = np.r_[np.ones(3000), np.zeros(30000)]
    cal = Calibration.fit(d, same, model="m")
    # the 50% point lies between the two modes and the slope is steep and positive
    assert 0.9 < cal.midpoint < 1.3 and cal.slope > 5
    assert cal.probability(0.4) > 0.99 and cal.probability(1.8) < 0.01
    t = cal.threshold(1e-2)
    assert np.mean(impostor <= t) == pytest.approx(1e-2, abs=2e-3)
    # a search over 100 identities must use a stricter per-comparison threshold
    assert cal.threshold(1e-2, comparisons=100) < t
    restored = Calibration.from_dict("m", json.loads(json.dumps(cal.to_dict())))
    assert restored.threshold(1e-2) == pytest.approx(t, rel=1e-3)
    assert restored.slope == pytest.approx(cal.slope)


def test_threshold_for_far():
    d = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    t = threshold_at_far(d, 0.05)
    assert np.sum(d <= t) == 5
    assert threshold_at_far(d, 0.001) < 0.01
    with pytest.raises(ValueError):
        threshold_at_far([], 0.1)


def test_calibration_file_and_fallback(tmp_path):
    fallback = Calibration.load("no-such-model-entry", threshold=1.1)
    assert fallback.midpoint == 1.1 and fallback.slope > 0 and "fallback" in fallback.source
    path = tmp_path / "cal.json"
    CAL.save(path)
    loaded = Calibration.load("m", path=path)
    assert loaded.far_table == pytest.approx(CAL.far_table)
    ident = Identifier(["a"], np.array([0]), unit(np.random.default_rng(0), 1), loaded, far=1e-2)
    assert ident.threshold == pytest.approx(1.0)
    ident100 = Identifier([f"a{i}" for i in range(100)], np.arange(100), unit(np.random.default_rng(0), 100),
                          loaded, far=1e-2)
    assert ident100.threshold < ident.threshold


def test_identifier_from_gallery(tmp_path):
    x, y = people(5, 3)
    with Gallery(tmp_path / "g.db") as g:
        with pytest.raises(Exception, match="empty"):
            Identifier.from_gallery(g)
        for i in range(5):
            g.add_embeddings(f"n{i}", x[y == i][:2], model="m", preprocessing_id="p")
        ident = Identifier.from_gallery(g, model="m", preprocessing_id="p", calibration=CAL, threshold=1.0)
        probes = x[2::3]
        assert [r.identity for r in ident.search(probes)] == [f"n{i}" for i in range(5)]
        with pytest.raises(ModelMismatchError):
            Identifier.from_gallery(g, model="other", preprocessing_id="p", calibration=CAL)
        with pytest.raises(ModelMismatchError):
            ident.search(np.ones((1, 64), np.float32))


def test_exact_reranking_fixes_the_order_of_8bit_codes():
    """Re-ranking the codes' candidates by their float vectors returns exact distances, and finds
    the exact nearest neighbour at least as often as the codes alone (same lists probed)."""
    rng = np.random.default_rng(1)
    x, queries = unit(rng, 20000), unit(rng, 200)
    _, truth = ExactIndex(x).search(queries, 1)
    index = build_index(x, "ivf-sq8", nlist=64, nprobe=64, rerank=8)  # every list: only the codes can err
    d, found = index.search(queries, 5)
    exact = 2 - 2 * np.einsum("qd,qkd->qk", queries, x[found])
    assert np.allclose(d, exact, atol=1e-4) and np.mean(found[:, 0] == truth[:, 0]) == 1.0
    index.set_search(rerank=0)
    d_codes, codes_only = index.search(queries, 1)
    assert np.mean(codes_only[:, 0] == truth[:, 0]) < 1.0 and not np.allclose(d_codes[:, 0], d[:, 0], atol=1e-4)
    with pytest.raises(FacespaceError, match="re-ranking needs"):
        build_index(x[:2000], "ivf-sq8", nlist=8, rerank=0).set_search(rerank=4)
