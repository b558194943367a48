"""How long do the pictures take: one GIF of --epochs frames x --points 2-D features, drawn
with plots.py's own functions from synthetic snapshots (ten drifting Gaussian classes)
written by rundir.save_snapshot.

    python bench/draw_gif.py                  # 100 frames x 10,000 points
    python bench/draw_gif.py --points 60000   # full MNIST
    python bench/draw_gif.py --quick --fake   # smoke run: 5 frames x 1,000 points

Timed: the shared axis limits and the GIF (drawing, encoding, writing); not the snapshots'
writing or reading. The data is always generated.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
import plots  # noqa: E402
import rundir  # noqa: E402

NAME = "draw_gif"


def run(cfg):
    device = common.device_of(cfg)
    meta = common.meta(cfg, device, frames=cfg.epochs, points=cfg.points)
    with tempfile.TemporaryDirectory(prefix="bench-") as run_dir:
        args, _ = common.synthetic_run(run_dir, cfg.epochs, cfg.points, cfg.points, device)
        snaps = rundir.load_snapshots(run_dir)

        def draw():
            limits = plots.shared_limits(snaps)
            return plots.draw_gif(snaps, "train", os.path.join(run_dir, "train.gif"), args,
                                  plots.class_names("mnist", 10), limits)
        seconds, path = common.timed(draw)
        results = {"seconds": seconds, "frames": cfg.epochs, "points": cfg.points,
                   "gif_mb": os.path.getsize(path) / 1e6}
    return common.publish(NAME, cfg, device, {"meta": meta, "results": results}, table)


def table(report):
    r = report["results"]
    return "\n".join(common.header("bench/draw_gif.py", report["meta"]) + [
        f"{r['frames']} frames x {r['points']} points: {r['seconds']:.1f} s ({r['gif_mb']:.1f} MB GIF)"])


def parse_flags(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=None, help="frames (default 100, quick 5)")
    p.add_argument("--points", type=int, default=None, help="points per frame (default 10000, quick 1000)")
    cfg = common.parse(p, argv)
    cfg.epochs = cfg.epochs if cfg.epochs is not None else (5 if cfg.quick else 100)
    cfg.points = cfg.points if cfg.points is not None else (1000 if cfg.quick else 10_000)
    if cfg.epochs < 1 or cfg.points < 1:
        p.error("--epochs and --points must be positive")
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
