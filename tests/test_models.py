"""Both feature extractors map 1x28x28 and 3x32x32 images to (batch, feat_dim)."""
import pytest
import torch

from models import build_model


@pytest.mark.parametrize("name", ["lenet", "resnet"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("feat_dim", [2, 128])
def test_feature_shape(name, channels, size, feat_dim):
    torch.manual_seed(0)
    model = build_model(name, feat_dim, channels, size)
    out = model(torch.rand(3, channels, size, size))
    assert out.shape == (3, feat_dim)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet_is_the_reference_size():
    """REFERENCE.md: about 0.4 M parameters (with feat_dim 2 and the fc2 head kept apart)."""
    n = sum(p.numel() for p in build_model("resnet", 2, 1, 28).parameters())
    assert 350_000 < n < 450_000


def test_unknown_model():
    with pytest.raises(ValueError, match="resnet, lenet"):
        build_model("vgg", 2, 1, 28)
