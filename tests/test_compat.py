"""Compatibility maps between the old (512-D) and new (128-D) embedders, and int8 codes.

Real data: 300 celeba-299 images (30 identities x 10) embedded by both models
with their registered crops through the evaluation cache (seconds once cached).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facespace.compat import (CompatMap, CompatMapError, default_compat_dir, find_map, fit_map, identity_folds,
                              list_maps, load_map, save_map)
from facespace.errors import FacespaceError, ModelMismatchError
from facespace.quantized import dequantize_int8, quantize_int8

from shared_data import DATA

pytestmark = pytest.mark.usefixtures("compat_maps")  # the maps are fitted per run: see conftest

OLD, NEW = "facenet-casia-512", "facenet-msceleb-128"


@pytest.fixture(scope="module")
def celeba() -> dict:
    """Paired embeddings of 300 celeba images: {"old", "new", "labels", "old_pre", "new_pre"}."""
    from facespace import FacePipeline
    from facespace.evaluation import embed_paths

    folders = sorted((DATA / "celeba-299" / "faces").iterdir())
    folders = [f for f in folders if len(list(f.glob("*.jpg"))) >= 10][:30]
    paths = [p for f in folders for p in sorted(f.glob("*.jpg"))[:10]]
    out = {"labels": np.array([int(p.parent.name) for p in paths])}
    for key, model in (("old", OLD), ("new", NEW)):
        pipeline = FacePipeline(model=model)
        out[key] = embed_paths(pipeline, paths, progress=False).embeddings
        out[f"{key}_pre"] = pipeline.preprocessing_id
    return out


def _fit(kind: str, data: dict, rows: np.ndarray, source: str = "old", target: str = "new") -> CompatMap:
    models = {"old": OLD, "new": NEW}
    return fit_map(kind, data[source][rows], data[target][rows], source_model=models[source],
                   target_model=models[target], source_preprocessing=data[f"{source}_pre"],
                   target_preprocessing=data[f"{target}_pre"], groups=data["labels"][rows],
                   fitted_on={"data": "test subset"})


@pytest.mark.parametrize("kind", ["ridge", "procrustes"])
@pytest.mark.parametrize("source,target", [("old", "new"), ("new", "old")])
def test_fitted_map_brings_same_image_closest(celeba, kind, source, target):
    labels = celeba["labels"]
    train = np.isin(labels, np.unique(labels)[:20])  # fit on 20 identities, check on the other 10
    compat = _fit(kind, celeba, train, source, target)
    mapped = compat.apply(celeba[source][~train])
    native = compat.apply_target(celeba[target][~train])
    assert mapped.shape == native.shape == (int((~train).sum()), celeba[target].shape[1])
    assert mapped.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1, atol=1e-5)
    cos = mapped @ native.T
    same_image = np.diag(cos).mean()
    y = labels[~train]
    different_identity = cos[y[:, None] != y[None, :]].mean()
    assert same_image > different_identity + 0.3
    assert compat.source_dim == celeba[source].shape[1] and compat.meta["fitted_on"]["images"] == int(train.sum())


def test_mlp_map_brings_same_image_closest_and_round_trips(celeba, tmp_path):
    import torch

    from facespace.compat import gelu_tanh
    from facespace_train.compat_mlp import MlpConfig, fit_mlp_arrays

    labels = celeba["labels"]
    train = np.isin(labels, np.unique(labels)[:20])
    arrays, params = fit_mlp_arrays(celeba["old"][train], celeba["new"][train], labels[train],
                                    MlpConfig(hidden=64, epochs=5))
    compat = CompatMap(name=f"{OLD}-to-{NEW}-mlp", kind="mlp", source=OLD, target=NEW,
                       source_preprocessing=celeba["old_pre"], target_preprocessing=celeba["new_pre"], **arrays)
    mapped, native = compat.apply(celeba["old"][~train]), compat.apply_target(celeba["new"][~train])
    cos, y = mapped @ native.T, labels[~train]
    assert np.diag(cos).mean() > cos[y[:, None] != y[None, :]].mean() + 0.3
    assert compat.space_id == celeba["new_pre"]  # into the new model's own space: migrations may use it
    x = np.linspace(-4, 4, 101, dtype=np.float32)  # numpy's GELU is the one torch trained with
    np.testing.assert_allclose(gelu_tanh(x), torch.nn.GELU(approximate="tanh")(torch.as_tensor(x)).numpy(), atol=1e-6)
    save_map(compat, tmp_path)
    np.testing.assert_array_equal(load_map(compat.name, tmp_path).apply(celeba["old"][:5]), compat.apply(celeba["old"][:5]))
    with pytest.raises(ModelMismatchError):
        compat.apply(celeba["new"][:3])
    with pytest.raises(CompatMapError, match="hidden"):
        CompatMap(name="x", kind="mlp", source=OLD, target=NEW, source_preprocessing="", target_preprocessing="",
                  weight=arrays["weight"], bias=arrays["bias"])


def test_ridge_strength_chosen_on_held_out_identities(celeba):
    folds = identity_folds(celeba["labels"], 5)
    for label in np.unique(celeba["labels"]):
        assert len(np.unique(folds[celeba["labels"] == label])) == 1
    compat = _fit("ridge", celeba, np.ones(len(folds), bool))
    assert compat.meta["params"]["strength"] in [float(k) for k in compat.meta["params"]["cv_mean_cosine"]]


def test_map_refuses_the_wrong_embeddings(celeba):
    compat = _fit("procrustes", celeba, np.ones(len(celeba["labels"]), bool))
    with pytest.raises(ModelMismatchError):
        compat.apply(celeba["new"][:3])
    with pytest.raises(ModelMismatchError):
        compat.to_common(celeba["old"][:3], OLD, preprocessing_id="model=facenet-casia-512;align=centre")
    assert np.allclose(compat.to_common(celeba["new"][:3], NEW), compat.apply_target(celeba["new"][:3]))


def test_save_and_load_round_trip(celeba, tmp_path):
    compat = _fit("procrustes", celeba, np.ones(len(celeba["labels"]), bool))
    save_map(compat, tmp_path)
    loaded = load_map(compat.name, tmp_path)
    assert (loaded.source, loaded.target, loaded.kind) == (OLD, NEW, "procrustes")
    assert loaded.source_preprocessing == celeba["old_pre"]
    np.testing.assert_allclose(loaded.apply(celeba["old"][:5]), compat.apply(celeba["old"][:5]), atol=1e-6)
    assert list_maps(tmp_path)[0]["sha256"] and list_maps(tmp_path)[0]["fitted_on"]["data"] == "test subset"


def test_stored_maps_load_verified_and_match_the_registered_preprocessing(celeba):
    entries = list_maps()
    assert {e["kind"] for e in entries} == {"ridge", "procrustes", "harmonic", "mlp"}
    for entry in entries:
        compat = load_map(entry["name"])
        side_pre = {OLD: celeba["old_pre"], NEW: celeba["new_pre"]}
        assert compat.source_preprocessing == side_pre[compat.source]
        assert compat.target_preprocessing == side_pre[compat.target]
        assert entry["fitted_on"]["images"] > 1000 and "celeba" in entry["fitted_on"]["data"]
    assert find_map(OLD, NEW).source == OLD and find_map(NEW, OLD, kind="ridge").kind == "ridge"
    assert find_map(OLD, NEW, target_space_only=True).kind != "harmonic"
    ridge, harmonic = find_map(OLD, NEW, kind="ridge"), find_map(OLD, NEW, kind="harmonic")
    assert ridge.space_id == celeba["new_pre"]  # mapped vectors compare with the new model's own
    assert harmonic.space_id.startswith(celeba["new_pre"] + ";head=") and harmonic.fingerprint in harmonic.space_id
    with pytest.raises(CompatMapError):
        find_map(NEW, NEW)


def test_tampered_map_is_refused(tmp_path):
    name = list_maps()[0]["name"]
    folder = tmp_path / "compat"
    shutil.copytree(default_compat_dir(), folder)
    target = folder / f"{name}.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(FacespaceError, match="sha256"):
        load_map(name, folder)
    target.unlink()
    with pytest.raises(CompatMapError, match="missing"):
        load_map(name, folder)


def test_int8_round_trip(celeba):
    x = celeba["new"]
    codes = quantize_int8(x)
    assert codes.dtype == np.int8 and codes.shape == x.shape and codes[0].nbytes == 128
    assert np.abs(codes).max(axis=1).min() == 127
    back = dequantize_int8(codes)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(back * x, axis=1)) > 0.9995
    assert np.abs((back @ back.T) - (x @ x.T)).max() < 0.01
    with pytest.raises(FacespaceError):
        dequantize_int8(codes.astype(np.int16))
    with pytest.raises(FacespaceError):
        quantize_int8(np.full((1, 4), np.nan))


def test_augmented_views_pair_the_same_face(tmp_path):
    from facespace import FacePipeline
    from facespace.evaluation import embed_paths
    from facespace.errors import OptionError
    from facespace_train.compat_augment import AugmentView, augmented_embeddings, views_named

    paths = sorted((DATA / "celeba-299" / "faces").iterdir())[0].glob("*.jpg")
    paths = sorted(paths)[:4]
    pipeline = FacePipeline(model=NEW)
    plain = embed_paths(pipeline, paths, progress=False).embeddings
    same = augmented_embeddings(pipeline, paths, AugmentView("none"), cache_root=tmp_path)
    np.testing.assert_allclose(same, plain, atol=1e-5)  # an unperturbed view is the cached embedding itself
    mirror = augmented_embeddings(pipeline, paths, AugmentView("mirror", flip=1.0), cache_root=tmp_path)
    jitter = augmented_embeddings(pipeline, paths, AugmentView("j", flip=0.0, shift=0.05, scale=0.08, seed=1),
                                  cache_root=tmp_path)
    for view in (mirror, jitter):
        cos = np.sum(view * plain, axis=1)
        assert np.all(cos > 0.7) and np.all(cos < 0.9999)  # the same face, not the same crop
    assert len(list((tmp_path / "compat-augmented").glob("*.npz"))) == 3
    np.testing.assert_array_equal(augmented_embeddings(pipeline, paths, AugmentView("mirror", flip=1.0),
                                                       cache_root=tmp_path), mirror)  # from the cache
    assert [v.name for v in views_named("mirror,jitter1")] == ["mirror", "jitter1"] and views_named("") == ()
    with pytest.raises(OptionError, match="jitter9"):
        views_named("jitter9")
