"""Feature extractors: images (N, C, H, W) -> features (N, feat_dim)."""
from .lenet import LeNetPP
from .resnet import SlimStridedResNet, SmallResNet, StridedResNet

MODELS = {"resnet": SmallResNet, "resnet-s2": StridedResNet, "resnet-s2-slim": SlimStridedResNet,
          "lenet": LeNetPP}


def build_model(name, feat_dim, in_channels, image_size):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](feat_dim=feat_dim, in_channels=in_channels, image_size=image_size)


__all__ = ["LeNetPP", "SlimStridedResNet", "SmallResNet", "StridedResNet", "MODELS", "build_model"]
