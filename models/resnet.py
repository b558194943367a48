from torch import nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the input (through a 1x1 conv when the shape
    changes)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.skip = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = self.relu(self.bn1(x))
        # the projection shortcut takes the pre-activated input, as in He et al. (2016)
        shortcut = x if self.skip is None else self.skip(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class SmallResNet(nn.Module):
    """The small pre-activation ResNet of the reference runs (about 0.4 M parameters):
    conv1 3x3 with 16 channels and no padding; five one-block stages of widths
    32, 32, 64, 64, 128 and strides 1, 2, 1, 2, 1; BN-ReLU, global average pool and
    fc1: 128 -> feat_dim, the feature (linear, no activation)."""

    widths = (32, 32, 64, 64, 128)
    strides = (1, 2, 1, 2, 1)
    stem = dict(stride=1, padding=0)

    def __init__(self, feat_dim=2, in_channels=1, image_size=None):
        super().__init__()
        layers = [nn.Conv2d(in_channels, 16, 3, bias=False, **self.stem)]
        cin = 16
        for width, stride in zip(self.widths, self.strides):
            layers.append(PreActBlock(cin, width, stride))
            cin = width
        layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(cin, feat_dim)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc1(self.features(x))


class StridedResNet(SmallResNet):
    """SmallResNet with a stride-2 stem (3x3, padding 1): the same layers and parameters,
    every block on a map a quarter the size (MNIST: 14x14, 7x7 and 4x4 instead of 26x26,
    13x13 and 7x7). On two AMX-BF16 Xeon cores a training step takes half the time (bf16,
    batch 64: 3869 against 1932 img/s, bench/README.md): --recipe quick's model on MNIST and
    Fashion-MNIST."""

    stem = dict(stride=2, padding=1)


class SlimStridedResNet(StridedResNet):
    """StridedResNet with its last stage at 64 channels, not 128 (widths 32, 32, 64, 64, 64;
    about 0.24 M parameters; fc1: 64 -> feat_dim). Its layers are the strided ResNet's but
    the last block's: 0.78x its FLOPs, and on two AMX-BF16 Xeon cores a training step takes
    0.83-0.88x its time (bf16, batch 64 and 128). Faster, and less accurate: in --recipe
    quick on MNIST, 5 of 9 runs at 0.99 against the strided ResNet's 9 (bench/README.md)."""

    widths = (32, 32, 64, 64, 64)
