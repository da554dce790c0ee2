"""The bfloat16 backend: close to float32 on real faces, labelled so galleries do not mix them (nor
with the earlier autocast bf16's), and the float32 path unchanged by the network's autocast residual
rule."""

from __future__ import annotations

import numpy as np
import pytest

from test_batching import crops  # noqa: F401  (the module fixture of real LFW crops)

#: Measured min cosine to float32 0.9992 on the LFW view-1 DevTest faces (bfloat16 residual sums fused
#: into the convolutions; benchmarks/results/bf16.json).
BF16_MIN_COSINE = 0.999
#: The label of the earlier bf16 embeddings (autocast, float32 residual sums): up to 6e-3 apart from
#: today's, so they must not compare equal.
EARLIER_BF16_PRECISION = "bf16:f32-residual"


def test_bf16_is_close_to_float_and_labelled(pipeline, crops):  # noqa: F811
    import torch

    from facespace import FacePipeline
    from facespace.embedding import BF16_PRECISION, Embedder
    from facespace.runtime.fuse import ConvReLU

    faces = np.concatenate(crops)
    reference = pipeline.embedder.embed_crops(faces)
    bf16 = Embedder(backend="torch-bf16")
    got = bf16.embed_crops(faces)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(got * reference, axis=1)
    assert cosine.min() > BF16_MIN_COSINE
    assert np.abs(got - reference).max() > 1e-4  # really bfloat16, not the float network
    one_by_one = np.concatenate([bf16.embed_crops(c[None]) for c in faces])
    assert np.sum(one_by_one * got, axis=1).min() > 0.9999
    labelled = FacePipeline(backend="torch-bf16")
    assert labelled.preprocessing["precision"] == BF16_PRECISION != EARLIER_BF16_PRECISION
    assert all(m.dtype == torch.bfloat16 for m in bf16.network.modules() if isinstance(m, ConvReLU))
    assert labelled.preprocessing_id != pipeline.preprocessing_id
    assert "precision" not in pipeline.preprocessing


def test_residual_rule_leaves_float32_exact():
    """Outside autocast the residual sum is the plain float32 one (same values, same dtype)."""
    import torch

    from facespace.networks.inception_resnet_v1 import _residual

    x, branch = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    out = _residual(x, branch, 0.17)
    assert out.dtype == torch.float32 and torch.equal(out, x + 0.17 * branch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _residual(x.bfloat16(), branch.bfloat16(), 0.17)
    assert mixed.dtype == torch.float32


def test_bf16_backend_refused_off_the_cpu():
    from facespace.embedding import Embedder
    from facespace.errors import OptionError

    with pytest.raises(OptionError, match="runs on the CPU"):
        Embedder(backend="torch-bf16", device="cuda")
