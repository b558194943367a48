"""The feature extractors map 1x28x28 and 3x32x32 images to (batch, feat_dim)."""
import pytest
import torch

from models import build_model


@pytest.mark.parametrize("name", ["lenet", "resnet", "resnet-s2", "resnet-s2-slim"])
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


def test_strided_resnet_is_the_resnet_on_a_quarter_of_the_map():
    """The same parameters (names and shapes) as the ResNet; every block sees half the side
    (MNIST: 14, 7, 7, 4, 4 where the ResNet has 26, 13, 13, 7, 7), so a quarter of the
    activations, and a state_dict of one loads into the other."""
    torch.manual_seed(0)
    base, strided = build_model("resnet", 2, 1, 28), build_model("resnet-s2", 2, 1, 28)
    assert {k: v.shape for k, v in base.state_dict().items()} == \
        {k: v.shape for k, v in strided.state_dict().items()}
    strided.load_state_dict(base.state_dict())

    def block_sides(model):
        sides = []
        hooks = [m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
                 for m in model.features if type(m).__name__ == "PreActBlock"]
        model(torch.rand(2, 1, 28, 28))
        for h in hooks:
            h.remove()
        return sides
    assert block_sides(base) == [26, 13, 13, 7, 7]
    assert block_sides(strided) == [14, 7, 7, 4, 4]


def test_slim_strided_resnet_narrows_only_the_last_stage():
    """resnet-s2-slim: every tensor of resnet-s2 with its name and shape except the last
    block's and fc1's, which have 64 channels where resnet-s2 has 128."""
    slim = {k: v.shape for k, v in build_model("resnet-s2-slim", 2, 1, 28).state_dict().items()}
    strided = {k: v.shape for k, v in build_model("resnet-s2", 2, 1, 28).state_dict().items()}
    last = ("features.5.", "features.6.", "fc1.")  # the last block, its BatchNorm, fc1
    # 64 -> 64 at stride 1: the identity shortcut where resnet-s2 has a 1x1 conv to 128
    assert slim.keys() == strided.keys() - {"features.5.skip.weight"}
    assert {k: v for k, v in slim.items() if not k.startswith(last)} == \
        {k: v for k, v in strided.items() if not k.startswith(last)}
    assert slim["features.5.conv1.weight"] == (64, 64, 3, 3)
    assert strided["features.5.conv1.weight"] == (128, 64, 3, 3)
    assert slim["features.5.conv2.weight"] == (64, 64, 3, 3) and slim["fc1.weight"] == (2, 64)


def test_unknown_model():
    with pytest.raises(ValueError, match="resnet, resnet-s2, resnet-s2-slim, lenet"):
        build_model("vgg", 2, 1, 28)
