"""What --tensorboard costs, piece by piece, with tboard.py's own Board on synthetic snapshots
(ten drifting Gaussian classes): one epoch's scalars (the training loop waits for these), one
epoch's two frames (drawn in the background thread), one log point's loss terms.

    python bench/tensorboard_cost.py                    # 5,000 train and 5,000 val points
    python bench/tensorboard_cost.py --points 60000     # full MNIST's training split
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tboard  # noqa: E402
import visualize  # noqa: E402


def median_seconds(fn, repeats):
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=5000, help="training points per frame")
    p.add_argument("--val-points", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    flags = p.parse_args()
    rng = np.random.default_rng(0)
    means = rng.normal(size=(10, 2)) * 5
    args = {"loss": "standalone", "dataset": "mnist", "model": "resnet", "feat_dim": 2,
            "epochs": flags.epochs}
    with tempfile.TemporaryDirectory() as run_dir:
        records = []
        for epoch in range(1, flags.epochs + 1):
            scale = epoch / flags.epochs
            split = {}
            for name, n in (("train", flags.points), ("val", flags.val_points)):
                labels = rng.integers(0, 10, n)
                split[name] = (torch.from_numpy((means[labels] * scale + rng.normal(size=(n, 2)))
                                                .astype(np.float32)), torch.from_numpy(labels))
            centers = means * scale
            record = {"epoch": epoch, "lr": 0.01, "train_loss": -1.0, "train_intra": 1.0,
                      "train_inter": -2.0, "train_acc": 0.9, "train_nc_acc": 0.9, "val_acc": 0.9,
                      "val_nc_acc": 0.9, "val_dist_to_center_mean": rng.uniform(1, 2, 10).tolist(),
                      "val_dist_to_center_std": rng.uniform(0, 1, 10).tolist(),
                      "val_center_distances": np.linalg.norm(centers[:, None] - centers[None],
                                                             axis=2).tolist(), "seconds": 10.0}
            records.append(record)
            visualize.save_snapshot(run_dir, epoch, *split["train"], *split["val"],
                                    torch.from_numpy(centers).float(), record)
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump(args, f)
        board = tboard.Board(run_dir, args, background=False)
        scalars = median_seconds(lambda i: board.epoch({**records[i], "epoch": 1000 + i}),
                                 flags.epochs)
        paths = visualize.snapshot_paths(run_dir)
        frames = median_seconds(lambda i: board.images(paths[i]), flags.epochs)
        terms = median_seconds(lambda i: board.step_terms({"loss": -1.0, "intra": 1.0,
                                                           "inter": -2.0}, i), 100)
        board.close()
        print(f"one epoch's {len(tboard.epoch_scalars(records[0], 'mnist'))} scalars: "
              f"{scalars * 1e3:.1f} ms (in the training loop)")
        print(f"one epoch's two frames ({flags.points} train + {flags.val_points} val points): "
              f"{frames * 1e3:.0f} ms (background thread)")
        print(f"one log point's 3 loss terms: {terms * 1e3:.2f} ms (every --log-interval steps)")


if __name__ == "__main__":
    main()
