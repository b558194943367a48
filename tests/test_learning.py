"""Each objective learns: separable blobs through a small MLP into 2-D features reach a high
validation accuracy (argmax or nearest center, as `predict` decides) within a few epochs."""
import argparse

import pytest
import torch
from torch import nn

from losses import build_objective
from optim import build_optimizer


def blobs(n, generator, num_classes=4, dim=8):
    means = torch.eye(num_classes, dim) * 4.0
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return means[labels] + torch.randn(n, dim, generator=generator), labels


@pytest.mark.parametrize("name", ["xent", "cent", "standalone"])
def test_objective_learns_blobs(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_train, y_train = blobs(1024, g)
    x_val, y_val = blobs(512, g)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    objective = build_objective(name, 4, 2)
    args = argparse.Namespace(optimizer="sgd", lr=0.01, lr_cent=None, momentum=0.9,
                              weight_decay=0.0, nesterov=False, wd_exempt=False)
    optimizer = build_optimizer(args, model, objective)

    def val_acc():
        with torch.no_grad():
            return (objective.predict(model(x_val)) == y_val).float().mean().item()

    before = val_acc()
    for epoch in range(4):
        for i in torch.randperm(1024, generator=g).split(32):
            loss = objective(model(x_train[i]), y_train[i])["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = val_acc()
    assert before < 0.6
    assert after > 0.9, f"{name}: val acc {before:.3f} -> {after:.3f}"
