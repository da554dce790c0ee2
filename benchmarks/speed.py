"""CPU speed of facespace against facenet-pytorch 2.6.0 and face_recognition 1.3 (dlib).

    FACESPACE_HOME=/tmp/fshome python benchmarks/speed.py \
        [--bench-python /tmp/benchenv/bin/python] [--threads 1] [--repeats 3]

writes benchmarks/results/speed.json and speed.md. Every library runs in its
own subprocess (facespace in this interpreter's environment; the others in the
``--bench-python`` environment, which needs torch==2.13.0, numpy, pillow,
requests, tqdm, opencv-python-headless, ``facenet-pytorch==2.6.0 --no-deps``,
``dlib-bin face_recognition==1.3.0 face_recognition_models --no-deps`` and
``setuptools<81`` for face_recognition_models' pkg_resources), one subprocess
per measurement so each reports its own peak memory (ru_maxrss: model load
included). All runs use the same inputs and the same torch thread count.

Measurements (medians over ``--repeats`` timed runs after one warm-up run):

* detection ms/image: real photos from ../shared/data/photos, resized
  (stretched) to exactly 640x480 and 1280x720, one image per call;
* embedding faces/s at batch 1 and batch 32: the same 32 real 160x160 LFW
  face crops (facespace's MTCNN + margin crop) for every library, pixel
  normalisation included;
* end to end images/s: the first 500 LFW (deepfunneled) images in sorted
  order, from file to embeddings of every face found (one timed run);
* peak resident memory of each measurement's process.

Same weights: facenet-pytorch's InceptionResnetV1 gets facespace's converted
``facenet-msceleb-128`` state dict (the unfused Keras weights). Both networks
define their parameters and buffers in the same order with the same shapes
(conv, bn for every BasicConv2d; branches in the same order; the residual 1x1
up-projection; last_linear/last_bn = bottleneck_linear/bottleneck_bn), so the
state dict is mapped to theirs by position, with every shape checked; their
512-d head is replaced by 128-d layers first. The worker reports the largest
difference between their embeddings and facespace's on the benchmark crops.
facenet-pytorch's MTCNN loads the same P/R/O-Net files facespace registers.
facenet-pytorch imports torchvision (which does not work with this torch)
only for ``batched_nms`` and ``to_tensor``: the worker installs a small stub
module with equivalents written here. face_recognition uses its own models
(dlib HOG detector, 5-point landmarks, ResNet descriptor); it is a different
network, so it is a speed reference only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _paths import DATA, RESULTS

PHOTOS = [
    "dlib_faces/2007_007763.jpg", "dlib_faces/2008_001009.jpg", "dlib_faces/2008_002079.jpg",
    "dlib_faces/2009_004587.jpg", "dlib_faces/bald_guys.jpg", "deepface/couple.jpg",
    "insightface_pkg/t1.jpg", "face_recognition_examples/examples/two_people.jpg",
]
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
LFW_IMAGES = 500
LIBRARIES = ("facespace", "facespace-onnx", "facespace-int8", "facespace-unfused", "facenet-pytorch",
             "face_recognition")
#: facespace's embedding backend behind each facespace column.
BACKEND_OF = {"facespace": "torch", "facespace-onnx": "onnx", "facespace-int8": "onnx-int8"}
TASKS = {
    "facespace": ("detect_640x480", "detect_1280x720", "embed_b1", "embed_b32", "e2e"),
    "facespace-onnx": ("embed_b1", "embed_b32", "e2e"),
    "facespace-int8": ("embed_b1", "embed_b32", "e2e"),
    "facespace-unfused": ("embed_b1", "embed_b32"),
    "facenet-pytorch": ("detect_640x480", "detect_1280x720", "embed_b1", "embed_b32", "e2e"),
    "face_recognition": ("detect_640x480", "detect_1280x720", "embed_b1", "embed_b32", "e2e"),
}


# ----------------------------------------------------------------- workers

def _peak_mib() -> float:
    """This process's own peak RSS. (Not ru_maxrss: Linux carries the parent's peak across
    fork + exec into it, so every worker would report at least the driver's peak.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _load_inputs(folder: Path):
    import numpy as np

    with np.load(folder / "inputs.npz") as data:
        arrays = {k: data[k] for k in data.files}
    lfw = json.loads((folder / "lfw.json").read_text())
    return arrays, lfw


def _install_torchvision_stub() -> None:
    """Just what facenet-pytorch 2.6.0 takes from torchvision: batched_nms and to_tensor."""
    import types

    import numpy as np
    import torch

    def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        b = boxes.detach().double().cpu().numpy()
        order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        keep = []
        while order.size:
            i, rest = order[0], order[1:]
            keep.append(i)
            w = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
            h = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
            inter = w * h
            iou = inter / (area[i] + area[rest] - inter)
            order = rest[iou <= threshold]
        return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty(0, dtype=torch.int64, device=boxes.device)
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)

    def to_tensor(pic):
        array = np.asarray(pic)
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return tensor.float().div(255) if array.dtype == np.uint8 else tensor

    modules = {name: types.ModuleType(name) for name in (
        "torchvision", "torchvision.transforms", "torchvision.transforms.functional",
        "torchvision.ops", "torchvision.ops.boxes")}
    modules["torchvision.transforms.functional"].to_tensor = to_tensor
    modules["torchvision.ops.boxes"].batched_nms = batched_nms
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)


def _facenet_pytorch_resnet(state_path: Path):
    import torch
    from torch import nn
    from facenet_pytorch import InceptionResnetV1

    ours = torch.load(state_path, map_location="cpu", weights_only=True)
    dim = ours["bottleneck_linear.weight"].shape[0]
    model = InceptionResnetV1(pretrained=None, classify=False)
    model.last_linear = nn.Linear(1792, dim, bias=False)
    model.last_bn = nn.BatchNorm1d(dim, eps=0.001)
    theirs = model.state_dict()
    if len(theirs) != len(ours):
        raise RuntimeError(f"state dicts differ in length: {len(theirs)} vs {len(ours)}")
    mapped = {}
    for (key, value), (src, tensor) in zip(theirs.items(), ours.items()):
        if value.shape != tensor.shape:
            raise RuntimeError(f"{key} {tuple(value.shape)} != {src} {tuple(tensor.shape)}")
        mapped[key] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _prewhiten(crops):
    """facespace's registered normalisation for facenet-msceleb-128 (per-image standardisation)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).double()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp(min=1 / np.sqrt(x[0].numel()))
    return ((x - mean) / std).float()


def worker(library: str, task: str, folder: Path, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    arrays, lfw = _load_inputs(folder)
    out: dict = {"library": library, "task": task, "threads": threads}
    if library.startswith("facespace"):
        run = _facespace_functions(library, task, lfw)
    elif library == "facenet-pytorch":
        run = _facenet_pytorch_functions(task, folder, lfw)
    elif library == "face_recognition":
        import dlib

        out["versions"] = {"dlib": dlib.__version__}
        run = _face_recognition_functions(arrays["crops"], lfw)
    else:
        raise SystemExit(f"unknown library {library}")

    if task.startswith("detect"):
        out.update(_measure_detection(run["detect"], arrays[task.split("_", 1)[1]], library, repeats))
    elif task.startswith("embed"):
        reference = None if library == "face_recognition" else arrays["reference_embeddings"]
        out.update(_measure_embedding(run["embed"], arrays["crops"], int(task[len("embed_b"):]), repeats, reference))
    else:
        start = time.perf_counter()
        faces = run["e2e"]()
        elapsed = time.perf_counter() - start
        out.update(images_per_s=len(lfw) / elapsed, seconds=elapsed, images=len(lfw), faces=faces)
    out["peak_rss_mib"] = _peak_mib()
    return out


def _facespace_functions(library: str, task: str, lfw: list[str]) -> dict:
    """The function ``task`` times for a facespace column: ``detect``, ``embed`` or ``e2e``."""
    import torch

    from facespace import FacePipeline
    from facespace.detection.mtcnn import MTCNN
    from facespace.embedding import Embedder

    backend = BACKEND_OF.get(library, "torch")
    if library == "facespace-unfused":  # the network as loaded before issue 6: BN unfolded, NCHW
        from facespace.pretrained.loader import load_embedder
        from facespace.runtime.preprocess import normalise

        net = load_embedder()

        def embed(batch):
            with torch.inference_mode():
                return net(normalise(batch, "prewhiten")).numpy()
        return {"embed": embed}
    if task.startswith("detect"):
        detector = MTCNN.pretrained()
        return {"detect": lambda image: detector.detect_one(image)}
    if task.startswith("embed"):
        embedder = Embedder(backend=backend, batch_size=32)
        return {"embed": lambda batch: embedder.embed_crops(batch)}
    pipeline = FacePipeline(backend=backend)
    pipeline.detector, pipeline.embedder.network  # load both networks before timing, as the others do

    def e2e():
        results = pipeline.embed_images(lfw, chunk=16)
        return sum(len(r.faces) for r in results)
    return {"e2e": e2e}


def _facenet_pytorch_functions(task: str, folder: Path, lfw: list[str]) -> dict:
    """facenet-pytorch's ``detect``, ``embed`` and ``e2e`` (those ``task`` needs)."""
    import torch

    _install_torchvision_stub()
    from facenet_pytorch import MTCNN as FPMTCNN

    run = {}
    if task.startswith("detect") or task == "e2e":
        mtcnn = FPMTCNN(keep_all=True, device="cpu")
        run["detect"] = lambda image: mtcnn.detect(image)
    if task.startswith("embed") or task == "e2e":
        resnet = _facenet_pytorch_resnet(folder / "state.pt")

        def embed(batch):
            with torch.inference_mode():
                return resnet(_prewhiten(batch)).numpy()
        run["embed"] = embed
    if task == "e2e":
        from PIL import Image

        def e2e():
            found = 0
            for start in range(0, len(lfw), 16):
                images = [Image.open(p).convert("RGB") for p in lfw[start : start + 16]]
                with torch.inference_mode():
                    faces = mtcnn(images)  # list (per image) of N x 3 x 160 x 160 or None
                    faces = [f for f in faces if f is not None]
                    if faces:
                        batch = torch.cat(faces)
                        for s in range(0, len(batch), 32):
                            resnet(batch[s : s + 32])
                        found += len(batch)
            return found
        run["e2e"] = e2e
    return run


def _face_recognition_functions(crops, lfw: list[str]) -> dict:
    """face_recognition's (dlib's) ``detect``, ``embed`` and ``e2e``."""
    import dlib
    import face_recognition
    import numpy as np
    from face_recognition import api

    whole = dlib.rectangle(0, 0, crops.shape[2], crops.shape[1])

    def embed(batch):
        shapes = [api.pose_predictor_5_point(np.ascontiguousarray(c), whole) for c in batch]
        if len(batch) == 1:
            return [api.face_encoder.compute_face_descriptor(np.ascontiguousarray(batch[0]), shapes[0], 1)]
        images = [np.ascontiguousarray(c) for c in batch]
        objects = [dlib.full_object_detections([s]) for s in shapes]
        return api.face_encoder.compute_face_descriptor(images, objects, 1)

    def e2e():
        found = 0
        for path in lfw:
            image = face_recognition.load_image_file(path)
            found += len(face_recognition.face_encodings(image, face_recognition.face_locations(image)))
        return found
    return {"detect": lambda image: face_recognition.face_locations(image),  # HOG, upsample 1
            "embed": embed, "e2e": e2e}


def _measure_detection(detect, images, library: str, repeats: int) -> dict:
    counts = []

    def run():
        counts[:] = [_count(detect(im), library) for im in images]
    times = _timed(run, repeats)
    per_image = [t / len(images) * 1000 for t in times]
    return dict(ms_per_image=statistics.median(per_image), runs_ms_per_image=per_image,
                images=len(images), faces_found=sum(counts))


def _measure_embedding(embed, crops, batch: int, repeats: int, reference) -> dict:
    """Faces/s at ``batch`` (batch 1: 16 crops one at a time); with ``reference``, also the largest
    difference of the embeddings of all crops from facespace's (torch)."""
    import numpy as np

    if batch == 1:
        subset = crops[:16]
        run = lambda: [embed(subset[i : i + 1]) for i in range(len(subset))]  # noqa: E731
    else:
        subset = crops[:batch]
        run = lambda: embed(subset)  # noqa: E731
    n = len(subset)
    times = _timed(run, repeats)
    rates = [n / t for t in times]
    out = dict(faces_per_s=statistics.median(rates), runs_faces_per_s=rates, faces=n, batch=batch)
    if reference is not None:
        got = np.asarray(embed(crops))
        out["max_abs_diff_vs_facespace_torch"] = float(np.abs(got - reference).max())
    return out


def _count(result, library: str) -> int:
    if library == "facenet-pytorch":
        boxes = result[0]
        return 0 if boxes is None else len(boxes)
    return len(result)


# ----------------------------------------------------------------- driver

def _prepare(folder: Path) -> None:
    import cv2
    import numpy as np
    import torch

    from facespace import FacePipeline
    from facespace.embedding import Embedder
    from facespace.pretrained.loader import load_embedder

    data = DATA.resolve()
    photos = []
    for rel in PHOTOS:
        image = cv2.imread(str(data / "photos" / rel), cv2.IMREAD_COLOR)
        photos.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    arrays = {}
    for key, (w, h) in SIZES.items():
        arrays[key] = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA if p.shape[1] > w
                                           else cv2.INTER_LINEAR) for p in photos])
    lfw_root = data / "lfw" / "lfw-deepfunneled"
    lfw = sorted(str(p) for p in lfw_root.glob("*/*.jpg"))[:LFW_IMAGES]
    pipeline = FacePipeline()
    crops = []
    for path in lfw:
        image = pipeline.load(path)
        for face in pipeline.detect_arrays([image])[0]:
            crops.append(pipeline.crop(image, face))
            break
        if len(crops) == 32:
            break
    arrays["crops"] = np.stack(crops)
    arrays["reference_embeddings"] = Embedder().embed_crops(arrays["crops"])
    np.savez(folder / "inputs.npz", **arrays)
    (folder / "lfw.json").write_text(json.dumps(lfw))
    torch.save(load_embedder().state_dict(), folder / "state.pt")


def _machine(threads: int) -> dict:
    """The shared machine description plus memory, ONNX Runtime and the thread setting of this run."""
    import torch

    from facespace.evaluation.report import machine_info

    info = machine_info()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["torch_threads"], info["torch_default_threads"] = threads, torch.get_num_threads()
    return info


def _run_worker(python: str, library: str, task: str, folder: Path, repeats: int, threads: int,
                timeout: float) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--worker", library, "--task", task,
           "--folder", str(folder), "--repeats", str(repeats), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               FACESPACE_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"library": library, "task": task, "error": f"timed out after {timeout:.0f} s"}
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"library": library, "task": task, "error": (done.stderr or done.stdout).strip()[-600:]}
    return json.loads(lines[-1])


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def _markdown(report: dict) -> str:
    m, load = report["machine"], report["load_average"]
    rows = {(r["library"], r["task"]): r for r in report["runs"]}
    libs = [l for l in LIBRARIES if any(k[0] == l for k in rows)]

    def cell(lib, task, key, fmt):
        r = rows.get((lib, task))
        if r is None:
            return "-"
        if "error" in r:
            return "failed"
        return fmt.format(r[key])

    lines = [
        "# Speed: facespace vs facenet-pytorch 2.6.0 vs face_recognition 1.3 (CPU)", "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']}, {m['cpu_count']} logical CPUs, {m.get('memory_gib')} GiB; {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}  ",
        f"Threads: {m['torch_threads']} per library process (torch, ONNX Runtime; dlib is single-threaded)  ",
        f"Load average (1, 5, 15 min) before: {load['before']}, after: {load['after']}  ",
        f"Started {report['started']}, took {report['wall_s']:.0f} s; {report['repeats']} timed repeats "
        "(medians) after one warm-up, end to end timed once.", "",
    ]
    if report["contended"]:
        lines += ["**The machine was shared and loaded (load average > 1.5): all numbers are contended "
                  "and only their ratios within this run are meaningful.**", ""]
    lines += ["| | " + " | ".join(libs) + " |", "|---|" + "---|" * len(libs)]
    specs = [("detection 640x480, ms/image", "detect_640x480", "ms_per_image", "{:.0f}"),
             ("detection 1280x720, ms/image", "detect_1280x720", "ms_per_image", "{:.0f}"),
             ("embedding batch 1, faces/s", "embed_b1", "faces_per_s", "{:.1f}"),
             ("embedding batch 32, faces/s", "embed_b32", "faces_per_s", "{:.1f}"),
             (f"end to end {LFW_IMAGES} LFW images, images/s", "e2e", "images_per_s", "{:.2f}")]
    for label, task, key, fmt in specs:
        lines.append(f"| {label} | " + " | ".join(cell(l, task, key, fmt) for l in libs) + " |")
    for task in ("detect_640x480", "detect_1280x720", "embed_b1", "embed_b32", "e2e"):
        lines.append(f"| peak RSS {task}, MiB | " + " | ".join(cell(l, task, "peak_rss_mib", "{:.0f}") for l in libs) + " |")
    lines += ["", "Ratios (facespace / other; > 1 means facespace is faster):", ""]
    for name, value in report["ratios"].items():
        lines.append(f"- {name}: {value}")
    errors = [r for r in report["runs"] if "error" in r]
    if errors:
        lines += ["", "Failures:", ""] + [f"- {r['library']} {r['task']}: {r['error'][-300:]}" for r in errors]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "facenet-pytorch runs facespace's converted facenet-msceleb-128 weights (state dict mapped by "
    "position, shapes checked); max_abs_diff_vs_facespace_torch in its embed runs shows they compute "
    "the same embeddings. Its MTCNN uses the same P/R/O-Net weights with keep_all=True.",
    "face_recognition: dlib HOG detector (upsample 1), 5-point landmarks, dlib ResNet descriptor; a "
    "different model, compared for speed only. Its batch-32 run uses dlib's batched "
    "compute_face_descriptor on the 32 crops (landmarks predicted on the whole crop).",
    "facespace-onnx: the same network through ONNX Runtime (Embedder(backend='onnx')).",
    "facespace-int8: the int8-quantised network through ONNX Runtime (backend='onnx-int8'); on LFW "
    "view 2 it scores 99.37% against 99.40% for float (benchmarks/results/int8.json), its embeddings "
    "differ from float by cosine > 0.99, so max_abs_diff_vs_facespace_torch is large by design.",
    "facespace-unfused: the network as Embedder used it before issue 6 (batch norms unfolded, NCHW "
    "layout), to show what folding + channels-last gain.",
    "End to end: facespace FacePipeline(backend=...).embed_images (all faces, the registered crop: "
    "5-point alignment; chunks of 16); "
    "facenet-pytorch MTCNN(keep_all=True) on batches of 16 PIL images then InceptionResnetV1 in "
    "batches of 32; face_recognition load_image_file + face_locations + face_encodings per image.",
    "Photos were resized (stretched) to exactly the stated size; detection is one image per call.",
    "GPU: not measured (no GPU on this machine).",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--bench-python", default="/tmp/benchenv/bin/python",
                        help="interpreter of the environment holding facenet-pytorch and face_recognition")
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement process")
    return parser.parse_args(argv)


def _run_all(args: argparse.Namespace, folder: Path) -> list[dict]:
    """One worker process per (library, task); each result printed as it comes."""
    runs = []
    for library in args.libraries.split(","):
        python = sys.executable if library.startswith("facespace") else args.bench_python
        if not library.startswith("facespace") and not Path(python).exists():
            runs.append({"library": library, "task": "all", "error": f"{python} not found"})
            continue
        for task in TASKS[library]:
            result = _run_worker(python, library, task, folder, args.repeats, args.threads, args.timeout)
            print(json.dumps(result), flush=True)
            runs.append(result)
    return runs


def _ratios(runs: list[dict]) -> dict:
    """facespace against the others, the ONNX variants against facenet-pytorch and facespace, fused vs unfused."""
    rows = {(r["library"], r["task"]): r for r in runs if "error" not in r}
    ratios = {}
    for other in ("facenet-pytorch", "face_recognition"):
        for task, key, faster in (("detect_640x480", "ms_per_image", "lower"),
                                  ("detect_1280x720", "ms_per_image", "lower"),
                                  ("embed_b1", "faces_per_s", "higher"), ("embed_b32", "faces_per_s", "higher"),
                                  ("e2e", "images_per_s", "higher")):
            a, b = rows.get(("facespace", task)), rows.get((other, task))
            if a and b:
                ratios[f"{task} vs {other}"] = (_ratio(b[key], a[key]) if faster == "lower"
                                                else _ratio(a[key], b[key]))
    for variant in ("facespace-onnx", "facespace-int8"):
        for task, key in (("embed_b1", "faces_per_s"), ("embed_b32", "faces_per_s"), ("e2e", "images_per_s")):
            a, b = rows.get((variant, task)), rows.get(("facenet-pytorch", task))
            if a and b:
                ratios[f"{task} {variant} vs facenet-pytorch"] = _ratio(a[key], b[key])
            a, b = rows.get((variant, task)), rows.get(("facespace", task))
            if a and b:
                ratios[f"{task} {variant} vs facespace (torch)"] = _ratio(a[key], b[key])
    for task in ("embed_b1", "embed_b32"):
        a, b = rows.get(("facespace", task)), rows.get(("facespace-unfused", task))
        if a and b:
            ratios[f"{task} facespace (fused, channels-last) vs facespace-unfused"] = _ratio(a["faces_per_s"],
                                                                                        b["faces_per_s"])
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.task, Path(args.folder), args.repeats, args.threads)))
        return 0

    import tempfile

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    before = [round(x, 2) for x in os.getloadavg()]
    folder = Path(tempfile.mkdtemp(prefix="facespace-speed-"))
    _prepare(folder)
    runs = _run_all(args, folder)
    after = [round(x, 2) for x in os.getloadavg()]
    ratios = _ratios(runs)
    contended = max(before[0], after[0]) > 1.5
    report = {
        "command": "FACESPACE_HOME=... python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started, "wall_s": time.perf_counter() - t0, "machine": _machine(args.threads),
        "load_average": {"before": before, "after": after}, "contended": contended,
        "repeats": args.repeats, "inputs": {"photos": PHOTOS, "sizes": list(SIZES), "lfw_images": LFW_IMAGES,
                                            "crops": 32},
        "runs": runs, "ratios": ratios, "notes": NOTES,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "speed.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
