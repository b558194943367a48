"""How long the pictures take: one GIF of --epochs frames x --points 2-D features, drawn from
synthetic snapshots (ten drifting Gaussian classes) with visualize.py's own functions.

    python bench/draw_gif.py                  # 100 frames x 10,000 points
    python bench/draw_gif.py --points 60000   # full MNIST
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import visualize  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--points", type=int, default=10_000)
    flags = p.parse_args()
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 10, flags.points))
    means = rng.normal(size=(10, 2)) * 5
    args = {"loss": "standalone", "dataset": "mnist", "model": "resnet", "feat_dim": 2,
            "epochs": flags.epochs}
    with tempfile.TemporaryDirectory() as run_dir:
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump(args, f)
        for epoch in range(1, flags.epochs + 1):
            scale = epoch / flags.epochs
            features = means[labels.numpy()] * scale + rng.normal(size=(flags.points, 2))
            features = torch.from_numpy(features.astype(np.float32))
            record = {"epoch": epoch, "train_acc": 0.5, "val_acc": 0.5}
            visualize.save_snapshot(run_dir, epoch, features, labels, features, labels,
                                    torch.from_numpy(means * scale).float(), record)
        snaps = visualize.load_snapshots(run_dir)
        t0 = time.perf_counter()
        limits = visualize.shared_limits(snaps)
        path = visualize.draw_gif(snaps, "train", os.path.join(run_dir, "train.gif"), args,
                                  visualize.class_names("mnist", 10), limits)
        seconds = time.perf_counter() - t0
        print(f"{flags.epochs} frames x {flags.points} points: {seconds:.1f} s "
              f"({os.path.getsize(path) / 1e6:.1f} MB GIF)")


if __name__ == "__main__":
    main()
