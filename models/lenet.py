from torch import nn


def _conv_pair(cin, cout):
    return [nn.Conv2d(cin, cout, 5, padding=2), nn.PReLU(),
            nn.Conv2d(cout, cout, 5, padding=2), nn.PReLU(),
            nn.MaxPool2d(2)]


class LeNetPP(nn.Module):
    """LeNet++ of Wen et al. (ECCV 2016), the usual model for center loss on MNIST: three
    pairs of 5x5 convolutions (32, 64, 128 channels) with PReLU, 2x2 max-pool after each pair
    (28 -> 14 -> 7 -> 3), then fc1 -> feat_dim with PReLU: the feature."""

    def __init__(self, feat_dim=2, in_channels=1, image_size=28):
        super().__init__()
        self.features = nn.Sequential(*_conv_pair(in_channels, 32), *_conv_pair(32, 64),
                                      *_conv_pair(64, 128), nn.Flatten())
        side = image_size // 2 // 2 // 2
        self.fc1 = nn.Linear(128 * side * side, feat_dim)
        self.prelu = nn.PReLU()
        # Kaiming init (for PReLU's initial slope 0.25), zero biases. PyTorch's default init
        # leaves the features of an untrained LeNet++ about 1e-3 apart: where the log-inter
        # term's push, 2 d / (delta + d^2), is nearly 0, so the standalone loss would start
        # (and stay) collapsed on its centers.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.25)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.prelu(self.fc1(self.features(x)))
