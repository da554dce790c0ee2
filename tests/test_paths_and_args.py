"""Odd file names, bad output locations, bad option values and failing disks, through the real CLI.

Each case once crashed (a segfault inside OpenCV, a traceback, often after all the work was done) or
destroyed an earlier result; each must now end in one clear line per bad item, the rest done.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import pytest

from conftest import PHOTOS, lfw_image
from facespace.errors import ImageLoadError
from facespace.imageio import load_image

CLI = [sys.executable, "-m", "facespace.cli.main"]
CLIP = PHOTOS / "face_recognition_examples" / "examples" / "short_hamilton_clip.mp4"
FACE = lfw_image("Aaron_Peirsol", 1)
CAFE = b"caf\xe9"  # Latin-1 bytes: not valid UTF-8, so Python holds the name with a surrogate
LONG = b"x" * 300 + b".jpg"  # over the 255 bytes a file name may have


def run_cli(*args, limit_bytes: int | None = None, **env) -> subprocess.CompletedProcess:
    """The real command; stdout strictly UTF-8 (a name that cannot be printed would raise), and with
    ``limit_bytes`` a file size limit that makes writes past it fail with EFBIG (a full disk)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    environ = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "TQDM_DISABLE": "1",
               **{key: os.fspath(value) for key, value in env.items()}}
    return subprocess.run(CLI + [os.fsencode(a) for a in args], capture_output=True, timeout=300,
                          env=environ, preexec_fn=limit if limit_bytes else None)


def text(stream: bytes) -> str:
    return stream.decode("utf-8")  # strict: what the command printed must be clean UTF-8


def errors_of(proc: subprocess.CompletedProcess) -> list[str]:
    err = text(proc.stderr)
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("facespace")]


def bytes_path(folder: Path, *names: bytes) -> bytes:
    return os.path.join(os.fsencode(folder), *names)


def copy_to(src: Path, dest: bytes) -> bytes:
    with open(src, "rb") as handle, open(dest, "wb") as out:
        out.write(handle.read())
    return dest


@pytest.fixture(scope="module")
def unwritable() -> Path:
    """A folder that exists and that even root cannot create files in."""
    try:
        handle, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(handle)
    os.unlink(probe)
    pytest.skip("no unwritable folder on this machine")


# -- 1. file names ------------------------------------------------------------------------------
def test_printable_path_and_load_image_oserrors(tmp_path):
    from facespace.imageio import printable_path

    assert printable_path(bytes_path(tmp_path, CAFE + b".jpg")).endswith("caf\\xe9.jpg")
    assert printable_path("a\nb.jpg") == "a\\nb.jpg"
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    for path, message in [(bytes_path(tmp_path, LONG).decode("utf-8"), "too long"),
                          (str(loop), "symbolic links"), (str(Path(FACE) / "x.jpg"), "no such file")]:
        with pytest.raises(ImageLoadError, match=message):
            load_image(path)
    name = bytes_path(tmp_path, CAFE + b".jpg")
    copy_to(FACE, name)
    assert load_image(os.fsdecode(name)).shape == (250, 250, 3)


def test_detect_draws_odd_names_and_reports_a_long_one(tmp_path):
    image = copy_to(FACE, bytes_path(tmp_path, CAFE + b".jpg"))
    out = bytes_path(tmp_path, b"drawn-" + CAFE)
    proc = run_cli("detect", image, bytes_path(tmp_path, LONG), "--draw", out)
    assert proc.returncode == 1  # one bad item: reported, the other done
    assert "caf\\xe9.jpg: 1 face(s)" in text(proc.stdout)
    (error,) = errors_of(proc)
    assert "File name too long" in error and "xxxx.jpg" in error
    drawn = os.path.join(out, CAFE + b"_faces.jpg")
    with open(drawn, "rb") as handle:
        assert handle.read(2) == b"\xff\xd8"  # a JPEG
    assert [n for n in os.listdir(out) if n.startswith(b".")] == []


def test_embed_odd_and_long_names(tmp_path):
    image = copy_to(FACE, bytes_path(tmp_path, CAFE + b".jpg"))
    out = tmp_path / "faces.jsonl"
    proc = run_cli("embed", image, bytes_path(tmp_path, LONG), "--out", out, "--quiet")
    assert proc.returncode == 1
    (error,) = errors_of(proc)
    assert "File name too long" in error
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["source"].endswith("caf\\xe9.jpg")


def test_cluster_with_an_odd_name_writes_its_report(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    copy_to(FACE, bytes_path(photos, CAFE + b".jpg"))
    shutil.copyfile(lfw_image("Aaron_Peirsol", 2), photos / "plain.jpg")
    out = tmp_path / "out"
    proc = run_cli("cluster", photos, "--out", out, "--quiet")
    assert proc.returncode == 0 and errors_of(proc) == []
    report = json.loads((out / "clusters.json").read_text())
    faces = {f["image"]: f for c in report["clusters"] for f in c["faces"]}
    odd = next(f for name, f in faces.items() if name.endswith("caf\\xe9.jpg"))
    assert odd["href"] == "../photos/caf%E9.jpg"
    assert "caf\\xe9.jpg" in (out / "index.html").read_text(encoding="utf-8")
    proc = run_cli("cluster", bytes_path(tmp_path, LONG), "--out", out)
    assert proc.returncode == 1 and len(errors_of(proc)) == 1 and "too long" in text(proc.stderr)


def test_video_with_odd_names_in_and_out(tmp_path):
    clip = copy_to(CLIP, bytes_path(tmp_path, b"clip-" + CAFE + b".mp4"))
    folder = bytes_path(tmp_path, b"out-" + CAFE)
    annotated = os.path.join(folder, b"annotated-" + CAFE + b".mp4")
    tracks = os.path.join(folder, b"tracks-" + CAFE + b".json")
    proc = run_cli("video", clip, "--max-frames", "10", "--every", "10", "--quiet",
                   "--annotate", annotated, "--json", tracks)
    assert proc.returncode == 0, text(proc.stderr)
    assert errors_of(proc) == [] and "tracks-caf\\xe9.json" in text(proc.stderr)
    with open(tracks, "rb") as handle:
        report = json.loads(handle.read())
    assert report["video"].endswith("clip-caf\\xe9.mp4") and report["annotated"].endswith("annotated-caf\\xe9.mp4")
    link = tmp_path / "check.mp4"
    os.symlink(annotated, link)  # a plain name to read the result with
    capture = cv2.VideoCapture(str(link))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    capture.release()
    assert sorted(os.listdir(folder)) == sorted([os.path.basename(annotated), os.path.basename(tracks)])
    proc = run_cli("video", bytes_path(tmp_path, LONG))
    assert proc.returncode == 1 and len(errors_of(proc)) == 1 and "too long" in text(proc.stderr)


# -- 2. output locations, option values, the weight cache, pairs files --------------------------------
@pytest.mark.parametrize("command,where,kind", [
    (["embed", FACE, "--out"], "unwritable/x.npz", "cannot be written"),
    (["embed", FACE, "--out"], "folder.jsonl", "is a folder"),
    (["embed", FACE, "--out"], "file/x.npz", "is not a folder"),
    (["embed", FACE, "--out"], LONG.decode() + ".npz", "too long"),
    (["cluster", FACE, "--out"], "file", "is not a folder"),
    (["cluster", FACE, "--out"], "unwritable/out", "cannot be written"),
    (["detect", FACE, "--draw"], "unwritable/out", "cannot be written"),
    (["detect", FACE, "--draw"], "file", "is not a folder"),
    (["video", CLIP, "--json"], "unwritable/t.json", "cannot be written"),
    (["video", CLIP, "--annotate"], "folder.jsonl", "is a folder"),
    (["evaluate", "pairs", "--pairs", "pairs.csv", "--out"], "unwritable/out", "cannot be written"),
])
def test_bad_output_locations_fail_before_the_work(tmp_path, unwritable, command, where, kind):
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "file").write_text("not a folder")
    a, b = lfw_image("Aaron_Peirsol", 1), lfw_image("Aaron_Peirsol", 2)
    (tmp_path / "pairs.csv").write_text(f"{a},{b},1,0\n{a},{lfw_image('Serena_Williams', 1)},0,1\n")
    command = [str(tmp_path / c) if c == "pairs.csv" else c for c in command]
    target = unwritable / where.split("/", 1)[1] if where.startswith("unwritable/") else tmp_path / where
    proc = run_cli(*command, target)
    (error,) = errors_of(proc)
    assert proc.returncode == 1 and kind in error, error
    assert "wrote" not in text(proc.stderr) and text(proc.stdout) == ""  # refused before any work


@pytest.mark.parametrize("args,message", [
    (["cluster", "photos", "--out", "o", "--k", "0"], "must be positive"),
    (["verify", FACE, FACE, "--threshold", "inf"], "not a finite number"),
    (["verify", FACE, FACE, "--threshold", "nan"], "not a finite number"),
    (["verify", FACE, FACE, "--threshold", "-5"], "squared distance in [0, 4]"),
    (["cluster", "photos", "--out", "o", "--threshold", "9"], "squared distance in [0, 4]"),
    (["video", CLIP, "--iou", "1.5"], "must lie in [0, 1]"),
    (["detect", FACE, "--device", "foo"], "unknown device 'foo'"),
])
def test_bad_option_values_are_refused_by_the_parser(args, message):
    proc = run_cli(*args)
    err = text(proc.stderr)
    assert proc.returncode == 2 and message in err and "Traceback" not in err, err


def test_cuda_without_cuda_is_refused_up_front():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli("embed", FACE, "--out", "never.npz", "--device", "cuda")
    err = text(proc.stderr)
    assert proc.returncode == 2 and "CUDA is not available" in err and "Traceback" not in err
    assert not Path("never.npz").exists()


def test_unusable_weight_cache_is_one_line(tmp_path, unwritable):
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    for value, message in [(home, "is not a folder"), (unwritable / "facespace-home", "cannot be written")]:
        proc = run_cli("detect", FACE, FACESPACE_HOME=str(value))
        (error,) = errors_of(proc)
        assert proc.returncode == 1 and "FACESPACE_HOME" in error and message in error, error


def test_binary_pairs_file_is_one_line(tmp_path):
    for name in ("pairs.csv", "pairs.txt"):
        (tmp_path / name).write_bytes(FACE.read_bytes()[:2000])
        proc = run_cli("evaluate", "pairs", "--pairs", tmp_path / name, "--root", tmp_path)
        (error,) = errors_of(proc)
        assert proc.returncode == 1 and "not a text file" in error
    (tmp_path / "nul.csv").write_bytes(b"a.jpg,b.jpg,1\x00\n")
    proc = run_cli("evaluate", "pairs", "--pairs", tmp_path / "nul.csv")
    assert proc.returncode == 1 and "NUL" in errors_of(proc)[0]


def test_full_disk_keeps_the_earlier_result(tmp_path):
    out = tmp_path / "faces.jsonl"
    out.write_text("an earlier result\n")
    proc = run_cli("embed", FACE, "--out", out, "--quiet", limit_bytes=1000)  # one row is ~3 kB
    (error,) = errors_of(proc)
    assert proc.returncode == 1 and "File too large" in error and "faces.jsonl" in error
    assert out.read_text() == "an earlier result\n" and sorted(os.listdir(tmp_path)) == ["faces.jsonl"]
    proc = run_cli("video", CLIP, "--max-frames", "20", "--every", "10", "--quiet", "--annotate",
                   tmp_path / "a.mp4", limit_bytes=50_000)  # the clip's 20 frames are ~700 kB
    err = text(proc.stderr)
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("facespace: error: ") and "a.mp4" in err
    assert sorted(os.listdir(tmp_path)) == ["faces.jsonl"]  # no video, whole or broken, no temporaries


# -- 3. verified, not just present ----------------------------------------------------------------
def test_models_list_tells_corrupt_from_verified(tmp_path):
    from facespace.pretrained.registry import get_config
    from facespace.pretrained.weights import local_paths, weight_status

    config = get_config("mtcnn")
    if set(weight_status(config).values()) != {"verified"}:
        pytest.skip("the MTCNN weights are not cached here")
    target = tmp_path / "weights" / "mtcnn"
    target.mkdir(parents=True)
    for path in local_paths(config).values():
        shutil.copyfile(path, target / path.name)
    onet = target / "onet.pt"
    onet.write_bytes(onet.read_bytes()[:1000])  # truncated: present, not verified
    listed = {r["name"]: r for r in json.loads(run_cli("models", "list", "--json", FACESPACE_HOME=tmp_path).stdout)}
    assert listed["mtcnn"]["cached"] is True and listed["mtcnn"]["weights"] == "corrupt"
    assert listed["mtcnn"]["weight_files"] == {"pnet": "verified", "rnet": "verified", "onet": "corrupt"}
    assert listed["facenet-msceleb-128"]["weights"] == "missing"
    table = text(run_cli("models", "list", FACESPACE_HOME=tmp_path).stdout).splitlines()
    assert table[0].split()[6] == "weights" and next(r for r in table if r.startswith("mtcnn")).split()[6] == "corrupt"
    info = json.loads(run_cli("models", "info", "mtcnn", "--json", FACESPACE_HOME=tmp_path).stdout)
    assert info["weights"] == "corrupt" and info["weight_files"]["onet"] == "corrupt"
