import pytest
import torch

from facespace.networks import create_model, facenet_paper
from facespace.networks.complexity import count_mult_adds, count_parameters, describe_architecture


def test_nn2_matches_paper_table2():
    d = describe_architecture("nn2")
    assert d["input_size"] == [224, 224]
    assert abs(d["parameters"] - 7.5e6) / 7.5e6 < 0.02
    assert abs(d["mult_adds"] - 1.6e9) / 1.6e9 < 0.02
    nn4 = describe_architecture("nn4")
    assert nn4["parameters"] == d["parameters"]
    assert abs(nn4["mult_adds"] - 285e6) / 285e6 < 0.05


@pytest.mark.parametrize("name,params,flops", [("nns1", 26e6, 220e6), ("nns2", 4.3e6, 20e6)])
def test_small_reconstructions_match_paper_counts(name, params, flops):
    d = describe_architecture(name)
    assert abs(d["parameters"] - params) / params < 0.05
    assert abs(d["mult_adds"] - flops) / flops < 0.15


def test_counts_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 4 * 4, 5))
    assert count_parameters(net) == 3 * 8 * 9 + 128 * 5 + 5
    assert count_mult_adds(net, 4) == 27 * 8 * 16 + 128 * 5


@pytest.mark.parametrize("name", ["nn2", "nns1", "nns2"])
def test_embeddings_are_unit_length_any_size(name):
    for size in (None, 64):
        net = create_model(name, embedding_size=32, input_size=size, batch_norm=True).eval()
        h, w = net.input_size
        out = net(torch.randn(2, 3, h, w))
        assert out.shape == (2, 32)
        assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_l2_pool_and_maxout():
    x = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])
    pooled = facenet_paper.L2Pool2d(2, 2, 0)(x)
    assert pooled.item() == pytest.approx(5.0, abs=1e-3)
    m = facenet_paper.Maxout(3, 2, pieces=2)
    y = m(torch.randn(4, 3))
    assert y.shape == (4, 2)


def test_unknown_architecture():
    with pytest.raises(ValueError):
        create_model("nn9")
