"""The torch CPU network as oneDNN calls with ReLUs and residual sums fused (runtime/fuse.py
``fuse_pointwise``) and the table-driven uint8 normalisation: the same embeddings as the folded
network on real LFW faces, at any batch size, and the same network input as the float64 rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_batching import crops  # noqa: F401  (the module fixture of real LFW crops)

#: float32 fused vs the folded network: measured 3e-7 (oneDNN's own summation order), stated 1e-5.
FUSED_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def folded():
    from facespace.pretrained.loader import load_embedder

    return load_embedder(fuse=True)


def _reference(folded, faces: np.ndarray) -> np.ndarray:
    from facespace.runtime.preprocess import normalise

    with torch.inference_mode():
        return folded(normalise(faces, "prewhiten")).numpy()


def test_fused_float32_matches_folded_network_at_any_batch(folded, crops):  # noqa: F811
    from facespace.embedding import Embedder
    from facespace.runtime.fuse import ConvReLU, FusedResidual

    faces = np.concatenate(crops)
    reference = _reference(folded, faces)
    one_first = Embedder(backend="torch")  # weights laid out on a batch of 1 first, then used at 4
    got_one = np.concatenate([one_first.embed_crops(f[None]) for f in faces])
    one_first.batch_size = 4
    got_four = one_first.embed_crops(faces)
    modules = list(one_first.network.modules())
    assert sum(isinstance(m, FusedResidual) for m in modules) == 21
    assert sum(isinstance(m, ConvReLU) for m in modules) == 132
    for got in (got_one, got_four):
        assert np.abs(got - reference).max() < FUSED_TOLERANCE


def test_unfused_fallback_computes_the_same(folded, crops, monkeypatch):  # noqa: F811
    """Where torch lacks oneDNN's fused kernels the modules run plain convolutions: same maths."""
    import facespace.runtime.fuse as fuse
    from facespace.embedding import Embedder

    faces = np.concatenate(crops)[:4]
    monkeypatch.setattr(fuse, "_pointwise_op", lambda: None)
    plain = Embedder(backend="torch")
    assert all(m._op is None for m in plain.network.modules() if isinstance(m, fuse.ConvReLU))
    assert np.abs(plain.embed_crops(faces) - _reference(folded, faces)).max() < FUSED_TOLERANCE


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nonnegative_max_pool_equals_max_pool2d(dtype):
    from facespace.runtime.fuse import NonNegativeMaxPool

    pool = NonNegativeMaxPool(torch.nn.MaxPool2d(3, stride=2))
    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 64, 77, 77), (3, 256, 17, 17), (1, 896, 8, 8)]:  # the network's three pools
        x = torch.relu(torch.randn(shape, generator=generator)).to(dtype)  # half of it exact zeros
        for layout in (torch.contiguous_format, torch.channels_last):
            x = x.contiguous(memory_format=layout)
            expected = torch.nn.functional.max_pool2d(x, 3, 2)
            got = pool(x)
            assert got.dtype == dtype and torch.equal(got, expected)
    with pytest.raises(ValueError, match="unpadded"):
        NonNegativeMaxPool(torch.nn.MaxPool2d(3, stride=1, padding=1))


def _float64_rule(images: np.ndarray, mode: str) -> np.ndarray:
    """The normalisation as documented, computed the plain way (float64 throughout)."""
    x = images.transpose(0, 3, 1, 2).astype(np.float64)
    if mode == "fixed":
        return ((x - 127.5) / 128.0).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(x[0].size))
    return ((x - mean) / std).astype(np.float32)


@pytest.mark.parametrize("mode", ["prewhiten", "fixed"])
def test_uint8_normalisation_is_the_float64_rule(crops, mode):  # noqa: F811
    from facespace.runtime.preprocess import normalise, normalise_array

    rng = np.random.default_rng(0)
    faces = np.concatenate(crops)
    flat = np.full((1, 160, 160, 3), 77, dtype=np.uint8)  # std 0: the 1/sqrt(n) floor
    noise = rng.integers(0, 256, (3, 160, 160, 3), dtype=np.uint8)
    for images in (faces, flat, noise):
        expected = _float64_rule(images, mode)
        # exact integer statistics may differ from float64's rounded ones in a last bit: 1 ulp
        np.testing.assert_allclose(normalise_array(images, mode), expected, rtol=2e-7, atol=0)
        channels_last = normalise(images, mode, channels_last=True)
        assert channels_last.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(channels_last, torch.from_numpy(normalise_array(images, mode)))


def test_chunked_stem_gives_the_whole_batch_values(crops, monkeypatch):  # noqa: F811
    import facespace.runtime.fuse as fuse
    from facespace.embedding import Embedder

    faces = np.concatenate(crops)
    embedder = Embedder(backend="torch-bf16", batch_size=len(faces))
    monkeypatch.setattr(fuse, "STEM_CHUNK", len(faces))  # one chunk: the plain whole-batch path
    whole = embedder.embed_crops(faces)
    monkeypatch.setattr(fuse, "STEM_CHUNK", 2)
    chunked = embedder.embed_crops(faces)
    assert len(faces) > 2 and isinstance(embedder.network.conv2d_1a_3x3, fuse.ChunkedStem)
    assert np.abs(chunked - whole).max() < 1e-6
