"""What does --tensorboard cost, piece by piece? tboard.py's own Board on synthetic snapshots
(ten drifting Gaussian classes): one epoch's scalars (the training loop waits for these),
one epoch's two frames (drawn in the background thread during a run), one log point's loss
terms.

    python bench/tensorboard_cost.py                    # 5,000 train and 5,000 val points
    python bench/tensorboard_cost.py --points 60000     # full MNIST's training split
    python bench/tensorboard_cost.py --quick --fake     # smoke run

Medians over --epochs calls (100 for the loss terms). Needs the tensorboard package. The
data is always generated.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
import rundir  # noqa: E402
import tboard  # noqa: E402

NAME = "tensorboard_cost"


def run(cfg):
    device = common.device_of(cfg)
    meta = common.meta(cfg, device, epochs=cfg.epochs, points=cfg.points, val_points=cfg.val_points)
    with tempfile.TemporaryDirectory(prefix="bench-") as run_dir:
        args, records = common.synthetic_run(run_dir, cfg.epochs, cfg.points, cfg.val_points, device)
        board = tboard.Board(run_dir, args, background=False)
        try:  # epochs past the snapshots': the scalars alone
            scalars = common.median_seconds(lambda i: board.epoch({**records[i], "epoch": 1000 + i}),
                                            cfg.epochs)
            paths = rundir.snapshot_paths(run_dir)
            frames = common.median_seconds(lambda i: board.images(paths[i]), cfg.epochs)
            terms = common.median_seconds(lambda i: board.step_terms(
                {"loss": -1.0, "intra": 1.0, "inter": -2.0}, i), 100)
        finally:
            board.close()
    results = {"scalars": len(tboard.epoch_scalars(records[0], "mnist")), "scalars_ms": scalars * 1e3,
               "frames_ms": frames * 1e3, "terms": 3, "terms_ms": terms * 1e3}
    return common.publish(NAME, cfg, device, {"meta": meta, "results": results}, table)


def table(report):
    r, m = report["results"], report["meta"]
    return "\n".join(common.header("bench/tensorboard_cost.py", m) + [
        f"one epoch's {r['scalars']} scalars: {r['scalars_ms']:.1f} ms (in the training loop)",
        f"one epoch's two frames ({m['points']} train + {m['val_points']} val points): "
        f"{r['frames_ms']:.0f} ms (background thread)",
        f"one log point's {r['terms']} loss terms: {r['terms_ms']:.2f} ms (every --log-interval steps)"])


def parse_flags(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--points", type=int, default=None,
                   help="training points per frame (default 5000, quick 500)")
    p.add_argument("--val-points", type=int, default=None,
                   help="val points per frame (default 5000, quick 500)")
    p.add_argument("--epochs", type=int, default=None,
                   help="snapshots, and timed calls (default 10, quick 3)")
    cfg = common.parse(p, argv)
    for name, full, quick in (("points", 5000, 500), ("val_points", 5000, 500), ("epochs", 10, 3)):
        if getattr(cfg, name) is None:
            setattr(cfg, name, quick if cfg.quick else full)
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
