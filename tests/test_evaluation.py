"""Evaluation: the fold protocol (hand-computed), pair-list parsing, and a real LFW run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from facespace.evaluation.pairs import (
    DatasetError,
    PairsFormatError,
    find_lfw_layout,
    make_folds,
    read_csv_pairs,
    read_lfw_pairs,
)
from facespace.evaluation.protocol import (
    accuracy_at,
    auc_score,
    best_accuracy_threshold,
    calibrate_threshold,
    equal_error_rate,
    evaluate_pairs,
    roc_curve,
)
from facespace.calibration import threshold_at_far

from shared_data import DATA
LFW = DATA / "lfw"
LFW_IMAGES = LFW / "lfw-deepfunneled"
needs_lfw = pytest.mark.skipif(not (LFW / "pairs.txt").is_file(), reason="shared LFW data not present")


# -- the protocol on a synthetic score set ----------------------------------------------------
#
# Three folds of four pairs (S = same person, D = different):
#   fold 0: S 0.1, S 0.5, D 0.4,  D 0.9
#   fold 1: S 0.2, S 0.6, D 0.7,  D 1.0
#   fold 2: S 0.3, S 0.8, D 0.56, D 1.2
DIST = np.array([0.1, 0.5, 0.4, 0.9, 0.2, 0.6, 0.7, 1.0, 0.3, 0.8, 0.56, 1.2])
SAME = np.array([1, 1, 0, 0] * 3, dtype=bool)
FOLD = np.repeat([0, 1, 2], 4)


def test_fold_accuracies_by_hand():
    # Held-out fold 0; train = folds 1+2 sorted: .2S .3S .56D .6S .7D .8S 1.0D 1.2D.
    #   correct when accepting up to each value (4 impostors are right when nothing is accepted):
    #   none 4 | .2 5 | .3 6 | .56 5 | .6 6 | .7 5 | .8 6 | 1.0 5 | 1.2 4
    #   first maximum after .3 -> threshold (.3 + .56) / 2 = .43
    #   fold 0 at .43: S .1 right, S .5 wrong, D .4 wrong (accepted), D .9 right -> 2/4 = 0.5
    # Held-out fold 1; train = folds 0+2: .1S .3S .4D .5S .56D .8S .9D 1.2D
    #   none 4 | .1 5 | .3 6 | .4 5 | .5 6 | .56 5 | .8 6 | .9 5 | 1.2 4 -> (.3 + .4) / 2 = .35
    #   fold 1 at .35: S .2 right, S .6 wrong, D .7 right, D 1.0 right -> 3/4 = 0.75
    # Held-out fold 2; train = folds 0+1: .1S .2S .4D .5S .6S .7D .9D 1.0D
    #   none 4 | .1 5 | .2 6 | .4 5 | .5 6 | .6 7 | .7 6 | .9 5 | 1.0 4 -> (.6 + .7) / 2 = .65
    #   fold 2 at .65: S .3 right, S .8 wrong, D .56 wrong, D 1.2 right -> 2/4 = 0.5
    # mean = 7/12; deviations -1/12, 2/12, -1/12 -> population std = sqrt(6/144 / 3) = sqrt(2)/12
    report = evaluate_pairs(DIST, SAME, FOLD, far_target=0.375)
    assert report.thresholds == pytest.approx([0.43, 0.35, 0.65])
    assert report.fold_accuracies == pytest.approx([0.5, 0.75, 0.5])
    assert report.accuracy == pytest.approx(7 / 12)
    assert report.accuracy_std == pytest.approx(math.sqrt(2) / 12)
    assert (report.n_pairs, report.n_same, report.n_different, report.n_folds) == (12, 6, 6, 3)


def test_val_at_far_by_hand():
    # FAR(threshold) on the training impostors is the line through (0, 0) and (u_i, i/4).
    # far_target = 0.375 lies halfway between 1/4 and 2/4, so the threshold is halfway
    # between the 1st and 2nd smallest training impostor distances:
    #   fold 0 held out: impostors .56 .7 1.0 1.2 -> .56 + .5 * .14 = .63
    #     test: S .1, .5 accepted -> VAL 1;  D .4 accepted, .9 not -> FAR .5
    #   fold 1 held out: impostors .4 .56 .9 1.2  -> .4 + .5 * .16 = .48
    #     test: S .2 accepted, .6 not -> VAL .5;  D .7, 1.0 not -> FAR 0
    #   fold 2 held out: impostors .4 .7 .9 1.0   -> .4 + .5 * .3 = .55
    #     test: S .3 accepted, .8 not -> VAL .5;  D .56, 1.2 not -> FAR 0
    # VAL mean 2/3, population std sqrt(((1/3)^2 + 2 (1/6)^2) / 3) = sqrt(2)/6; FAR mean 1/6.
    report = evaluate_pairs(DIST, SAME, FOLD, far_target=0.375)
    assert report.val_thresholds == pytest.approx([0.63, 0.48, 0.55])
    assert report.fold_vals == pytest.approx([1.0, 0.5, 0.5])
    assert report.fold_fars == pytest.approx([0.5, 0.0, 0.0])
    assert report.val == pytest.approx(2 / 3)
    assert report.val_std == pytest.approx(math.sqrt(2) / 6)
    assert report.far == pytest.approx(1 / 6)


def test_far_1e3_interpolation_like_lfw():
    # 2700 training impostors (9 folds x 300) at distances 1, 2, ..., 2700: FAR = 1e-3 means
    # 2.7 impostors, between the 2nd (FAR 2/2700) and 3rd (3/2700): threshold 2 + 0.7 = 2.7,
    # which accepts 2 impostors -> training FAR 7.4e-4 <= 1e-3.
    impostors = np.arange(1, 2701, dtype=float)
    dist = np.concatenate([impostors, [0.5, 2.5, 3.0]])
    same = np.concatenate([np.zeros(2700, bool), np.ones(3, bool)])
    assert threshold_at_far(dist[~same], 1e-3) == pytest.approx(2.7)
    # Fewer impostors than 1/FAR: interpolate from (0, 0) to (smallest, 1/m): 4 impostors
    # at 2, 3, 4, 5 -> FAR 1e-3 at 2 * 1e-3 / 0.25 = 0.008.
    assert threshold_at_far([2, 3, 4, 5], 1e-3) == pytest.approx(0.008)
    # Ties: impostors 1, 2, 2, 2 -> FAR points (1, .25), (2, 1); target .5 -> 1 + (.25/.75) * 1
    assert threshold_at_far([1, 2, 2, 2], 0.5) == pytest.approx(1 + 1 / 3)


def test_auc_eer_and_calibration_by_hand():
    # AUC: count (same, different) pairs with d_same < d_diff; impostors .4 .56 .7 .9 1.0 1.2:
    #   .1, .2, .3 beat all 6; .5 beats 5; .6 beats 4; .8 beats 3 -> 30 / 36.
    assert auc_score(DIST, SAME) == pytest.approx(30 / 36)
    # EER: accepting up to .56 gives TPR 4/6 (FRR 1/3) and FAR 2/6 -> EER 1/3 at .56.
    eer, threshold = equal_error_rate(DIST, SAME)
    assert eer == pytest.approx(1 / 3, abs=1e-9)
    assert threshold == pytest.approx(0.56, abs=1e-6)
    # Calibration on all 12: correct counts none 6 | .1 7 | .2 8 | .3 9 | .4 8 | .5 9 ...
    # first maximum (9/12) after .3 -> (.3 + .4) / 2 = .35.
    assert calibrate_threshold(DIST, SAME) == pytest.approx(0.35)
    assert best_accuracy_threshold(DIST, SAME)[1] == pytest.approx(0.75)
    assert accuracy_at(DIST, SAME, 0.35) == pytest.approx(0.75)
    curve = roc_curve(DIST, SAME)
    assert curve.tpr[0] == 0 and curve.fpr[0] == 0 and curve.tpr[-1] == 1 and curve.fpr[-1] == 1


def test_protocol_perfect_separation_and_errors():
    rng = np.random.default_rng(0)
    same = np.tile(np.repeat([True, False], 50), 10)
    dist = np.where(same, rng.uniform(0.2, 0.8, same.size), rng.uniform(1.2, 2.0, same.size))
    folds = np.repeat(np.arange(10), 100)
    report = evaluate_pairs(dist, same, folds)
    assert report.accuracy == 1.0 and report.accuracy_std == 0.0
    assert report.auc == 1.0 and report.eer == 0.0
    assert all(0.8 < t < 1.2 for t in report.thresholds)
    d = report.to_dict()
    json.dumps(d)
    assert d["accuracy"] == 1.0 and "roc" not in d and len(d["fold_accuracies"]) == 10
    with pytest.raises(ValueError, match="two folds"):
        evaluate_pairs(dist, same, np.zeros_like(folds))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_pairs(np.full(4, np.nan), [1, 0, 1, 0], [0, 0, 1, 1])


# -- pair lists ------------------------------------------------------------------------------------
@needs_lfw
def test_lfw_view2_pairs():
    pairs = read_lfw_pairs(LFW / "pairs.txt", LFW_IMAGES)
    assert len(pairs) == 6000 and pairs.n_folds == 10 and pairs.folds_origin == "file"
    assert pairs.same.sum() == 3000
    assert np.bincount(pairs.folds).tolist() == [600] * 10
    assert pairs.same[:300].all() and not pairs.same[300:600].any()
    # First line after the header: "Abel_Pacheco 1 4"
    assert pairs.first[0] == LFW_IMAGES / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    assert pairs.second[0] == LFW_IMAGES / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    assert pairs.first[300].parent.name != pairs.second[300].parent.name
    assert len(pairs.paths()) == 7701
    small = pairs.limit(20)
    assert len(small) == 20 and small.n_folds == 10 and small.same.sum() == 10


@needs_lfw
def test_lfw_view1_and_layout():
    pairs = read_lfw_pairs(LFW / "pairsDevTrain.txt", LFW_IMAGES)
    assert len(pairs) == 2200 and pairs.same.sum() == 1100 and pairs.n_folds == 1
    refolded = pairs.with_folds(10, seed=0)
    assert refolded.n_folds == 10
    images, pairs_file = find_lfw_layout(LFW)
    assert images == LFW / "lfw-deepfunneled" and pairs_file == LFW / "pairs.txt"


def test_lfw_pairs_errors(tmp_path):
    root = tmp_path / "imgs"
    (root / "Ann").mkdir(parents=True)
    (root / "Ann" / "Ann_0001.jpg").write_bytes(b"x")
    (root / "Ann" / "Ann_0002.jpg").write_bytes(b"x")
    good = tmp_path / "good.txt"
    good.write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    assert len(read_lfw_pairs(good, root, check_files=False)) == 2
    with pytest.raises(DatasetError, match="Bob_0001.jpg"):
        read_lfw_pairs(good, root)
    with pytest.raises(PairsFormatError, match="does not exist"):
        read_lfw_pairs(tmp_path / "nope.txt", root)
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t1\nAnn\t1\nAnn\t1\tBob\t1\n")
    with pytest.raises(PairsFormatError, match=r"bad.txt:2: expected 'name i j'"):
        read_lfw_pairs(bad, root, check_files=False)
    bad.write_text("1\t1\nAnn\tone\t2\nAnn\t1\tBob\t1\n")
    with pytest.raises(PairsFormatError, match="not a whole number"):
        read_lfw_pairs(bad, root, check_files=False)
    bad.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    with pytest.raises(PairsFormatError, match="header says 2 folds"):
        read_lfw_pairs(bad, root, check_files=False)
    bad.write_text("1\t1\nAnn\t1\tBob\t1\nAnn\t1\t2\n")
    with pytest.raises(PairsFormatError, match="expected a same-person"):
        read_lfw_pairs(bad, root, check_files=False)
    with pytest.raises(DatasetError, match="does not exist"):
        find_lfw_layout(tmp_path / "missing")


def test_csv_pairs(tmp_path):
    people = [f"p{i:02d}" for i in range(40)]
    for p in people:
        (tmp_path / p).mkdir()
        for k in (1, 2):
            (tmp_path / p / f"{k}.jpg").write_bytes(b"x")
    lines = ["path1,path2,same"]
    for i, p in enumerate(people):
        lines.append(f"{p}/1.jpg,{p}/2.jpg,1")
        if i % 2 == 0:  # different pairs join people two by two: 20 components of 3 pairs
            lines.append(f"{p}/1.jpg,{people[i + 1]}/1.jpg,different")
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    pairs = read_csv_pairs(csv_file)
    assert len(pairs) == 60 and pairs.same.sum() == 40
    assert pairs.first[0] == tmp_path / "p00" / "1.jpg"
    assert pairs.folds_origin.startswith("identity-disjoint") and pairs.n_folds == 10
    fold_of_person: dict[str, set] = {}
    for a, b, f in zip(pairs.first, pairs.second, pairs.folds):
        for x in (a.parent.name, b.parent.name):
            fold_of_person.setdefault(x, set()).add(int(f))
    assert all(len(f) == 1 for f in fold_of_person.values())
    assert np.array_equal(read_csv_pairs(csv_file).folds, pairs.folds)  # fixed seed

    with_folds = tmp_path / "folds.csv"
    with_folds.write_text("p00/1.jpg,p00/2.jpg,true,0\np00/1.jpg,p01/1.jpg,false,1\n")
    p = read_csv_pairs(with_folds)
    assert p.folds.tolist() == [0, 1] and p.same.tolist() == [True, False] and p.folds_origin == "file"

    bad = tmp_path / "bad.csv"
    bad.write_text("p00/1.jpg,p00/2.jpg,1\np00/1.jpg,p01/1.jpg,maybe\n")
    with pytest.raises(PairsFormatError, match=r"bad.csv:2: 'same' must be"):
        read_csv_pairs(bad)
    bad.write_text("p00/1.jpg,p00/2.jpg,1\np00/1.jpg\n")
    with pytest.raises(PairsFormatError, match="bad.csv:2: expected 'path1,path2,same"):
        read_csv_pairs(bad)
    bad.write_text("p00/1.jpg,nobody/2.jpg,1\n")
    with pytest.raises(DatasetError, match="nobody"):
        read_csv_pairs(bad)


def test_make_folds_without_identities_and_with_a_giant_component():
    folds, note = make_folds(25, n_folds=10, seed=3)
    assert note.startswith("random") and np.bincount(folds).tolist() == [3] * 5 + [2] * 5
    chain = [(f"p{i}", f"p{i + 1}") for i in range(30)]  # one component: cannot be disjoint
    folds, note = make_folds(30, n_folds=5, identities=chain)
    assert note.startswith("by first identity") and len(np.unique(folds)) == 5


# -- real end-to-end run on LFW ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def lfw_cli_run(tmp_path_factory):
    """`facespace evaluate lfw` on 20 pairs (2 per fold), then again from the cache."""
    from facespace.cli.main import main

    cache = tmp_path_factory.mktemp("embcache")
    out = tmp_path_factory.mktemp("report")
    argv = ["evaluate", "lfw", "--root", str(LFW), "--limit-pairs", "20", "--cache-dir", str(cache),
            "--out", str(out), "--quiet", "--json"]
    import contextlib
    import io

    runs = []
    for _ in range(2):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(argv) == 0
        runs.append(json.loads(buffer.getvalue()))
    return cache, out, runs


@needs_lfw
def test_cli_lfw_end_to_end_and_cache_reuse(lfw_cli_run):
    cache, out, (first, second) = lfw_cli_run
    assert first["pairs"]["n"] == 20 and first["pairs"]["folds"] == 10 and first["images"] == 40
    assert first["embedding_stats"]["computed"] == {"plain": 40}
    assert first["embedding_stats"]["detections_computed"] == 40
    assert first["metrics"]["accuracy"] >= 0.9  # 99%+ on full LFW; an error allowed on 20 pairs
    assert first["missed_detections"] == 0
    # The second run computes nothing and gives the same numbers.
    assert second["embedding_stats"]["computed"] == {"plain": 0}
    assert second["embedding_stats"]["detections_computed"] == 0
    assert second["embedding_stats"]["cached"] == {"plain": 40}
    assert second["wall_s"] < 5
    assert second["metrics"] == first["metrics"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"]["accuracy"] == first["metrics"]["accuracy"] and "machine" in saved
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipped" in saved["roc_plot"]
    else:
        assert (out / "report_roc.png").stat().st_size > 1000


def test_cli_errors(tmp_path, capsys):
    from facespace.cli.main import main

    assert main(["evaluate", "lfw", "--root", str(tmp_path / "missing")]) == 1
    assert "LFW root" in capsys.readouterr().err
    assert main(["evaluate", "lfw", "--root", str(tmp_path)]) == 1
    assert "no pairs.txt" in capsys.readouterr().err
    assert main(["evaluate", "pairs", "--pairs", str(tmp_path / "nope.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "pairs.txt"
    bad.write_text("10\t300\nAnn\t1\n")
    assert main(["evaluate", "pairs", "--pairs", str(bad), "--root", str(tmp_path)]) == 1
    assert "header says 10 folds" in capsys.readouterr().err
    bad.write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    assert main(["evaluate", "lfw", "--root", str(tmp_path)]) == 1
    assert "at least two folds" in capsys.readouterr().err
    bad.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    assert main(["evaluate", "lfw", "--root", str(tmp_path)]) == 1
    assert "do not exist: " in capsys.readouterr().err


@needs_lfw
def test_flip_reuses_detections_and_matches_the_pipeline(lfw_cli_run):
    from facespace.evaluation.cache import embed_paths
    from facespace.pipeline import FacePipeline

    cache, _, _ = lfw_cli_run
    pipeline = FacePipeline(flip=True)
    pairs = read_lfw_pairs(LFW / "pairs.txt", LFW_IMAGES, check_files=False).limit(20)
    seen = pairs.paths()[:2]
    images = [p for p in sorted((LFW_IMAGES / "Zico").glob("*.jpg")) if p not in set(pairs.paths())][:1]
    assert len(images) == 1
    blank = cache.parent / "blank.jpg"  # no face in it: the centre-crop fallback
    from PIL import Image

    Image.new("RGB", (250, 250), (128, 128, 128)).save(blank)
    result = embed_paths(pipeline, [*seen, *images, blank], progress=False, cache_root=cache)
    stats = result.stats
    assert stats["cached"] == {"plain": 2, "mirror": 0}
    assert stats["computed"] == {"plain": 2, "mirror": 4}
    assert stats["detections_computed"] == 2  # the two seen images reuse their detections
    assert result.detected.tolist() == [True, True, True, False]
    assert result.missed == [str(blank)]
    assert result.embeddings.shape == (4, 128) and result.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1, atol=1e-5)
    # Same vector as the pipeline's own flip-averaged embedding of the face nearest the centre.
    faces = pipeline.embed(images[0])
    native = min(faces, key=lambda f: np.hypot(*((f.face.box[:2] + f.face.box[2:]) / 2 - 125)))
    assert float(native.embedding @ result.embeddings[2]) > 0.999


@needs_lfw
def test_cli_scoring_rules(lfw_cli_run, capsys):
    """--subtract-mean and --flip-rule concat on the cached run: reported, and refused without --flip."""
    from facespace.cli.main import main

    cache, _, (first, _) = lfw_cli_run
    base = ["evaluate", "lfw", "--root", str(LFW), "--limit-pairs", "20", "--cache-dir", str(cache), "--quiet",
            "--json"]
    assert main(base + ["--subtract-mean"]) == 0
    centred = json.loads(capsys.readouterr().out)
    assert centred["scoring"] == {"flip": "mean", "subtract_mean": True}
    assert first["scoring"] == {"flip": "mean", "subtract_mean": False}
    assert centred["embedding_stats"]["computed"] == {"plain": 0}  # scoring reuses the cached embeddings
    assert centred["metrics"]["thresholds"] != first["metrics"]["thresholds"]  # distances really changed
    assert main(base + ["--flip-rule", "concat"]) == 1
    assert "--flip-rule concat needs --flip" in capsys.readouterr().err
