"""Write tests/fixtures/reference_embeddings.json: embeddings computed by TensorFlow itself.

The PyTorch ports of both FaceNet models are tested against these numbers, so
they must come from the original framework, never from facespace. Run this
in a throwaway environment (TensorFlow is NOT a facespace dependency)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu h5py pillow numpy
    FACESPACE_HOME=/tmp/fshome /tmp/tfenv/bin/python scripts/make_reference_fixture.py

The weight files are found in the facespace cache (``$FACESPACE_HOME`` or
``~/.cache/facespace``; run ``facespace models pull`` first) or given with
``--keras-h5`` / ``--graphdef``.

* ``facenet-casia-512``: the frozen ``graph_final.pb`` is imported with
  ``tf.compat.v1.import_graph_def`` and run as is (``input:0`` ->
  ``embeddings:0``, one image at a time: its input shape is fixed to 1).
* ``facenet-msceleb-128``: the Keras 2.1 file stores its Lambda layers as
  marshalled Python 3.6 bytecode, which modern Keras cannot load, so the
  layer graph in ``model_config`` is interpreted here with ``tf.nn`` ops
  (conv2d with each layer's own padding and strides, batch_normalization,
  max_pool2d, concat, ``x + scale * r`` for the Lambdas) on the h5 weights.

Inputs: the fixed centre crop ``[45:205, 45:205]`` of 250 x 250 LFW
deep-funneled JPEGs decoded by PIL as RGB, normalised per the registry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
OUT = REPO / "tests" / "fixtures" / "reference_embeddings.json"
IMAGES = [
    "lfw/lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "lfw/lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "lfw/lfw-deepfunneled/George_W_Bush/George_W_Bush_0001.jpg",
    "lfw/lfw-deepfunneled/Serena_Williams/Serena_Williams_0001.jpg",
]
CROP = (45, 205, 45, 205)  # rows top:bottom, columns left:right
CACHE = Path(os.environ.get("FACESPACE_HOME") or Path.home() / ".cache" / "facespace") / "weights"


def load_crop(rel: str) -> np.ndarray:
    with Image.open(DATA / rel) as image:
        pixels = np.asarray(image.convert("RGB"))
    top, bottom, left, right = CROP
    return np.ascontiguousarray(pixels[top:bottom, left:right])


def prewhiten(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    std_adj = max(x.std(), 1.0 / np.sqrt(x.size))
    return ((x - x.mean()) / std_adj).astype(np.float32)


def fixed(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64) - 127.5) / 128.0).astype(np.float32)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.maximum((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True), 1e-10))


def keras_h5_embeddings(path: Path, batch: np.ndarray) -> np.ndarray:
    """Evaluate the Keras model's layer graph with TensorFlow ops (NHWC, float32)."""
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])["config"]
        group = h5["model_weights"]

        def weights(name: str) -> dict[str, tf.Tensor]:
            out = {}
            for wname in group[name].attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                out[wname.split("/")[-1].split(":")[0]] = tf.constant(np.asarray(group[name][wname]))
            return out

        values: dict[str, tf.Tensor] = {}
        for layer in config["layers"]:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            inputs = [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            if kind == "InputLayer":
                y = tf.constant(batch)
            elif kind == "Conv2D":
                w = weights(name)
                y = tf.nn.conv2d(inputs[0], w["kernel"], strides=[1, *cfg["strides"], 1],
                                 padding=cfg["padding"].upper(), dilations=[1, *cfg["dilation_rate"], 1])
                if cfg["use_bias"]:
                    y = tf.nn.bias_add(y, w["bias"])
                assert cfg["activation"] == "linear", name
            elif kind == "BatchNormalization":
                w = weights(name)
                y = tf.nn.batch_normalization(inputs[0], w["moving_mean"], w["moving_variance"],
                                              offset=w.get("beta"), scale=w.get("gamma"),
                                              variance_epsilon=cfg["epsilon"])
            elif kind == "Activation":
                assert cfg["activation"] == "relu", name
                y = tf.nn.relu(inputs[0])
            elif kind == "MaxPooling2D":
                y = tf.nn.max_pool2d(inputs[0], ksize=cfg["pool_size"], strides=cfg["strides"],
                                     padding=cfg["padding"].upper())
            elif kind == "Concatenate":
                y = tf.concat(inputs, axis=cfg["axis"])
            elif kind == "Lambda":  # residual: inputs[0] + scale * inputs[1]
                y = inputs[0] + cfg["arguments"]["scale"] * inputs[1]
            elif kind == "GlobalAveragePooling2D":
                y = tf.reduce_mean(inputs[0], axis=[1, 2])
            elif kind == "Dropout":
                y = inputs[0]  # inference
            elif kind == "Dense":
                w = weights(name)
                y = tf.matmul(inputs[0], w["kernel"])
                if cfg["use_bias"]:
                    y = y + w["bias"]
                assert cfg["activation"] == "linear", name
            else:
                raise NotImplementedError(f"{kind} layer {name}")
            values[name] = y
        output = config["output_layers"][0][0]
        return values[output].numpy()


def graphdef_embeddings(path: Path, batch: np.ndarray) -> np.ndarray:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    out = []
    with tf.compat.v1.Session(graph=graph) as session:
        for image in batch:
            out.append(session.run("embeddings:0", feed_dict={"input:0": image[None]})[0])
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-h5", type=Path, default=CACHE / "facenet-msceleb-128" / "facenet_keras.h5")
    parser.add_argument("--graphdef", type=Path, default=CACHE / "facenet-casia-512" / "graph_final.pb")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    crops = np.stack([load_crop(rel) for rel in IMAGES])
    models = {
        "facenet-msceleb-128": ("prewhiten", args.keras_h5, keras_h5_embeddings,
                                "facenet_keras.h5 layer graph evaluated with tf.nn ops"),
        "facenet-casia-512": ("fixed", args.graphdef, graphdef_embeddings,
                              "graph_final.pb run with tf.compat.v1.Session (input:0 -> embeddings:0)"),
    }
    fixture = {
        "description": "Reference FaceNet embeddings computed by TensorFlow; "
                       "PyTorch ports must match to < 1e-4 max abs difference.",
        "generated_by": "scripts/make_reference_fixture.py",
        "tensorflow_version": tf.__version__,
        "data_root": "../shared/data (relative to the repository root)",
        "crop": {"rows": list(CROP[:2]), "cols": list(CROP[2:]),
                 "note": "pixels[45:205, 45:205] of the 250x250 RGB JPEG decoded by PIL"},
        "images": [{"path": rel, "crop_sha256": hashlib.sha256(c.tobytes()).hexdigest()}
                   for rel, c in zip(IMAGES, crops)],
        "models": {},
    }
    for name, (mode, path, run, how) in models.items():
        norm = prewhiten if mode == "prewhiten" else fixed
        batch = np.stack([norm(c) for c in crops])
        embeddings = l2_normalise(run(path, batch))
        fixture["models"][name] = {
            "normalisation": mode,
            "weights": path.name,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "method": how,
            "embeddings": [[float(v) for v in row.astype(np.float32)] for row in embeddings],
        }
        print(name, embeddings.shape, "norms", np.linalg.norm(embeddings, axis=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1)
    for name, entry in fixture["models"].items():  # one line per embedding keeps diffs readable
        rows = ",\n    ".join(json.dumps(row) for row in entry["embeddings"])
        text = text.replace(json.dumps(entry["embeddings"], indent=1).replace("\n", "\n   "),
                            "[\n    " + rows + "\n   ]", 1)
    assert json.loads(text) == fixture
    args.out.write_text(text + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
