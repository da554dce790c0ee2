import argparse
import json

import cv2
import numpy as np
import pytest

from facespace_train.align_dataset import ERROR_LOG, NO_FACE_LOG, AlignSettings, align_dataset
from facespace_train.config import TrainConfig, add_arguments, from_args, load_toml


def parser():
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_toml_and_cli_override(tmp_path):
    cfg_file = tmp_path / "train.toml"
    cfg_file.write_text('[data]\ndata = "faces"\ninput_size = 64\n[optim]\noptimizer = "sgd"\nlr = 1\n'
                        '[loss]\nmining = "hard"\nflip = false\n')
    cfg = from_args(parser().parse_args(["--config", str(cfg_file), "--lr", "0.01", "--flip", "--p", "8"]))
    assert (cfg.data, cfg.input_size, cfg.optimizer, cfg.mining) == ("faces", 64, "sgd", "hard")
    assert cfg.lr == 0.01 and cfg.flip is True and cfg.p == 8 and cfg.k == TrainConfig().k
    assert isinstance(from_args(parser().parse_args(["--config", str(cfg_file)])).lr, float)


def test_every_option_on_the_cli():
    options = {a.dest for a in parser()._actions}
    assert set(TrainConfig.__dataclass_fields__) <= options


def test_bad_config_values(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 3\n")
    with pytest.raises(ValueError, match="nonsense"):
        load_toml(bad)
    bad.write_text('mining = "hardest"\n')
    with pytest.raises(ValueError, match="mining"):
        from_args(parser().parse_args(["--config", str(bad)]))


def test_facespace_train_command_prints_config(tmp_path, capsys):
    from facespace_train.cli import register_train

    sub = argparse.ArgumentParser().add_subparsers()
    register_train(sub)
    args = sub.choices["train"].parse_args(["--data", "x", "--mining", "random", "--print-config"])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out)["mining"] == "random"


class StubDetections:
    def __init__(self, boxes, landmarks=None):
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.landmarks = landmarks

    def __len__(self):
        return len(self.boxes)


class StubDetector:
    """'Finds' a face in images whose top-left pixel is bright; two boxes, the larger wins."""

    def __init__(self, settings):
        pass

    def detect(self, images):
        out = []
        for img in images:
            if img[0, 0, 0] > 128:
                out.append(StubDetections([[0, 0, 10, 10], [5, 5, 45, 45]]))
            else:
                out.append(StubDetections(np.zeros((0, 4))))
        return out


def make_source(root, n_id=3, n_img=4):
    for i in range(n_id):
        (root / f"id{i}").mkdir(parents=True)
        for j in range(n_img):
            img = np.full((60, 60, 3), 40, np.uint8)
            img[0, 0] = 255 if (i + j) % 3 else 0
            cv2.imwrite(str(root / f"id{i}" / f"{j}.jpg"), img)
    (root / "id0" / "broken.jpg").write_bytes(b"not an image")


def test_align_dataset_resumable_and_logs_no_face(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_source(src)
    settings = AlignSettings(size=32, mode="margin", margin=8)
    first = align_dataset(src, dst, settings, detector_factory=StubDetector, limit=5)
    assert first["skipped"] == 13 - 5 and sum(first[k] for k in ("ok", "no_face", "error")) == 5
    rest = align_dataset(src, dst, settings, detector_factory=StubDetector)
    assert rest["skipped"] == 5
    total = {k: first[k] + rest[k] for k in ("ok", "no_face", "error")}
    assert total == {"ok": 8, "no_face": 4, "error": 1}
    outs = sorted(dst.rglob("*.png"))
    assert len(outs) == 8 and all(cv2.imread(str(p)).shape == (32, 32, 3) for p in outs)
    assert len((dst / NO_FACE_LOG).read_text().splitlines()) == 4
    assert "broken.jpg" in (dst / ERROR_LOG).read_text()
    again = align_dataset(src, dst, settings, detector_factory=StubDetector)
    assert again == {"ok": 0, "no_face": 0, "error": 0, "skipped": 13}


def test_align_dataset_two_workers(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_source(src, n_id=2, n_img=3)
    counts = align_dataset(src, dst, AlignSettings(size=24, mode="margin"), workers=2,
                           detector_factory=StubDetector)
    assert counts["ok"] + counts["no_face"] == 6 and counts["error"] == 1
