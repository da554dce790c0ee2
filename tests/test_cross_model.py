"""Cross-model evaluation (old model's embeddings against a new one's through a compatibility map) and
int8 codes from ``facespace embed``: real weights, real LFW images, the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import LFW, lfw_image

pytestmark = pytest.mark.usefixtures("compat_maps")  # the maps are fitted per run: see conftest

OLD, NEW = "facenet-casia-512", "facenet-msceleb-128"
PAIRS_TXT = LFW.parent / "pairs.txt"


def facespace(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facespace.cli.main", *argv], capture_output=True, text=True,
                          timeout=600)


def _lfw_pairs(same: int, different: int) -> list[tuple[Path, Path, int]]:
    """The first ``same`` matched and ``different`` mismatched pairs of LFW view 2's first fold."""
    rows = [line.split("\t") for line in PAIRS_TXT.read_text().splitlines()[1:601]]
    matched = [(lfw_image(r[0], int(r[1])), lfw_image(r[0], int(r[2])), 1) for r in rows if len(r) == 3]
    mismatched = [(lfw_image(r[0], int(r[1])), lfw_image(r[2], int(r[3])), 0) for r in rows if len(r) == 4]
    return matched[:same] + mismatched[:different]


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    """20 LFW pairs (10 matched, 10 not) as ``path1,path2,same,fold``, in two folds of both labels."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.csv"
    rows = _lfw_pairs(10, 10)
    lines = [f"{a.relative_to(LFW)},{b.relative_to(LFW)},{same},{i % 2}" for i, (a, b, same) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cross_model_pairs_report_both_orders(pairs_csv, tmp_path):
    out = tmp_path / "report"
    run = facespace("evaluate", "pairs", "--pairs", str(pairs_csv), "--root", str(LFW), "--model", NEW,
                    "--against", OLD, "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    assert "old_first" in run.stdout and "new_first" in run.stdout and "mean of both orders" in run.stdout
    report = json.loads((out / "report.json").read_text())
    cross = report["cross_model"]
    assert cross["model"] == NEW and cross["against"] == OLD
    assert cross["map"]["name"].startswith(f"{OLD}-to-{NEW}-") and cross["map"]["source"] == OLD
    orders = cross["orders"]
    assert (orders["old_first"]["first"], orders["old_first"]["second"]) == (OLD, NEW)
    assert (orders["new_first"]["first"], orders["new_first"]["second"]) == (NEW, OLD)
    accuracies = [orders[o]["metrics"]["accuracy"] for o in ("old_first", "new_first")]
    assert cross["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert all(a > 0.7 for a in accuracies)
    for order in orders.values():
        metrics = order["metrics"]
        assert metrics["n_pairs"] == 20 and metrics["n_folds"] == 2 and len(metrics["thresholds"]) == 2
        assert {"val", "auc", "far_target"} <= set(metrics)
    assert report["pairs"]["n"] == 20 and set(report["preprocessing"]) == {OLD, NEW}
    assert (out / "report_roc.png").is_file()


def test_cross_model_named_map_and_errors(pairs_csv, tmp_path):
    from facespace.compat import list_maps

    ridge = next(m["name"] for m in list_maps() if m["kind"] == "ridge" and m["source"]["model"] == OLD)
    run = facespace("evaluate", "pairs", "--pairs", str(pairs_csv), "--root", str(LFW), "--model", NEW,
                    "--against", OLD, "--map", ridge, "--json", "--quiet")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["cross_model"]["map"]["name"] == ridge

    unknown = facespace("evaluate", "pairs", "--pairs", str(pairs_csv), "--root", str(LFW), "--model", NEW,
                        "--against", OLD, "--map", "no-such-map", "--quiet")
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1 and "no-such-map" in unknown.stderr

    alone = facespace("evaluate", "pairs", "--pairs", str(pairs_csv), "--map", ridge, "--quiet")
    assert alone.returncode == 1 and "--against" in alone.stderr


@pytest.mark.parametrize("suffix", [".npz", ".jsonl"])
def test_embed_quantize_int8(tmp_path, suffix):
    from facespace.quantized import dequantize_int8

    images = [str(lfw_image("Aaron_Peirsol", 1)), str(lfw_image("Abel_Pacheco", 1))]
    plain, coded = tmp_path / f"plain{suffix}", tmp_path / f"int8{suffix}"
    for out, extra in ((plain, []), (coded, ["--quantize", "int8"])):
        run = facespace("embed", *images, "--out", str(out), "--model", NEW, "--quiet", *extra)
        assert run.returncode == 0, run.stderr
    if suffix == ".npz":
        with np.load(plain) as a, np.load(coded) as b:
            floats, codes = a["embeddings"], b["embeddings"]
            assert "quantization" not in json.loads(str(a["metadata"]))
            meta = json.loads(str(b["metadata"]))
    else:
        lines = [[json.loads(line) for line in p.read_text().splitlines()] for p in (plain, coded)]
        floats = np.array([r["embedding"] for r in lines[0]], np.float32)
        codes = np.array([r["embedding"] for r in lines[1]]).astype(np.int8)
        assert all(isinstance(v, int) for v in lines[1][0]["embedding"])
        meta = lines[1][0]
    assert floats.dtype == np.float32 and codes.shape == floats.shape == (2, 128)
    if suffix == ".npz":
        assert codes.dtype == np.int8
    assert meta["quantization"] == "int8" and meta["model"] == NEW and "preprocessing" in meta
    cosine = np.sum(dequantize_int8(codes) * floats, axis=1) / np.linalg.norm(floats, axis=1)
    assert np.all(cosine > 0.999)
