"""The surgical mask drawn from 68 landmarks, its evaluation option and its cache key."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facespace.cli.main import main
from facespace.errors import OptionError
from facespace.evaluation.cache import embed_paths
from facespace.imageio import load_image
from facespace.occlusion import Occlusion, draw_mask, mask_outline, parse_occlusion

from conftest import LFW, lfw_image


@pytest.fixture(scope="module")
def face(pipeline):
    image = load_image(lfw_image("Aaron_Peirsol", 1))
    box = pipeline.detect(image)[0].box[:4]
    return image, pipeline.landmarker("dlib68").locate(image, box[None])[0].astype(np.float64)


def test_mask_changes_only_the_lower_face(face):
    image, points = face
    masked = draw_mask(image, points, ties=False)
    changed = (masked != image).any(axis=2)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(mask_outline(points)).astype(np.int32)], 1)
    grown = cv2.dilate(inside, np.ones((5, 5), np.uint8)) > 0  # anti-aliased edge
    assert changed.any() and not (changed & ~grown).any()
    eyes_bottom = points[36:48, 1].max()
    assert not changed[: int(eyes_bottom)].any()  # nothing at or above the eyes
    mouth = np.round(points[48:68]).astype(int)
    assert changed[mouth[:, 1], mouth[:, 0]].all()  # the mouth and the chin are covered
    chin = np.round(points[8]).astype(int)
    assert changed[chin[1], chin[0]]
    colour = masked[mouth[:, 1], mouth[:, 0]].astype(int)
    assert (colour[:, 2] > colour[:, 0]).all()  # light blue, whatever the lips were
    with_ties = (draw_mask(image, points) != image).any(axis=2)
    assert (with_ties & ~grown).any() and not with_ties[: int(points[[0, 16], 1].min()) - 3].any()


def test_mask_follows_the_landmarks(face):
    image, points = face
    before = (draw_mask(image, points) != image).any(axis=2)
    after = (draw_mask(image, points + [12, 7]) != image).any(axis=2)
    ys, xs = np.nonzero(before)
    ys2, xs2 = np.nonzero(after)
    assert xs2.mean() - xs.mean() == pytest.approx(12, abs=1.0)
    assert ys2.mean() - ys.mean() == pytest.approx(7, abs=1.0)
    with pytest.raises(ValueError):
        draw_mask(image, np.full((68, 2), np.nan))


def test_parse_occlusion():
    assert parse_occlusion("mask") == parse_occlusion("mask:") == Occlusion("mask", "both")
    assert parse_occlusion("mask:first") == Occlusion("mask", "first")
    for bad in ("scarf", "mask:second", "scarf:first"):
        with pytest.raises(OptionError, match="--occlude"):
            parse_occlusion(bad)


def test_masked_embeddings_are_cached_under_their_own_key(pipeline, tmp_path):
    paths = [lfw_image("Aaron_Peirsol", 1), lfw_image("Aaron_Peirsol", 2)]
    plain = embed_paths(pipeline, paths, progress=False, cache_root=tmp_path)
    masked = embed_paths(pipeline, paths, progress=False, cache_root=tmp_path, occlusion="mask")
    folders = sorted(p.name for p in tmp_path.iterdir() if p.name != "detections")
    assert len(folders) == 2 and folders[0].endswith("-mask-plain") != folders[1].endswith("-mask-plain")
    assert masked.preprocessing["occlusion"] == "mask" and "occlusion" not in plain.preprocessing
    distance = ((plain.embeddings - masked.embeddings) ** 2).sum(axis=1)
    assert (distance > 0.05).all()  # the mask changes what the network sees
    again = embed_paths(pipeline, paths, progress=False, cache_root=tmp_path, occlusion="mask")
    assert again.stats["computed"] == {"plain": 0}
    np.testing.assert_array_equal(again.embeddings, masked.embeddings)


def test_evaluate_occlude_errors(tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{lfw_image('Aaron_Peirsol', 1)},{lfw_image('Aaron_Peirsol', 2)},1,0\n"
                     f"{lfw_image('Aaron_Peirsol', 3)},{LFW / 'Aaron_Sorkin' / 'Aaron_Sorkin_0001.jpg'},0,1\n")
    assert main(["evaluate", "pairs", "--pairs", str(pairs), "--occlude", "scarf", "--quiet"]) == 1
    assert "--occlude" in capsys.readouterr().err
    assert main(["evaluate", "pairs", "--pairs", str(pairs), "--occlude", "mask", "--align", "centre",
                 "--quiet"]) == 1
    assert "detected faces" in capsys.readouterr().err
