"""What does an epoch cost besides training: the evaluation, the feature snapshot and the
checkpoint, against the training itself?

    python bench/epoch_overhead.py --data-dir <MNIST root>   # LeNet++ and the ResNet, standalone and cent
    python bench/epoch_overhead.py --quick --fake            # smoke run on generated data
    python bench/epoch_overhead.py --device cuda             # on a GPU

Per (model, loss), at full-MNIST sizes (59,904 training images, a deciding split of
--eval-images): the project's training step (bench/common.py's Ours, median img/s over
--repeats) gives the estimated seconds of a training epoch; beside it, what main.py does
after each epoch, timed with the project's own functions:
engine.evaluate (features of the clean training subset and of the deciding split, --eval-images
each, then accuracy, nearest-center, retrieval and geometry metrics), its engine.extract_features
calls timed apart; engine.extract_features alone at the evaluation batch main.py uses on this
device and at the other usual one (1024, or 128 where main.py uses 1024); rundir.save_snapshot
of the arrays main.py keeps; rundir.save_checkpoint of rundir.checkpoint_state (last.pt;
best.pt, when the accuracy improves, is one more).
"""
import os
import statistics
import sys
import tempfile
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
import engine  # noqa: E402
import rundir  # noqa: E402
from utils import rng_state  # noqa: E402

NAME = "epoch_overhead"
QUICK_EVAL_IMAGES = 512


def extraction_rates(ours, split, device, repeats):
    """{batch: img/s} of engine.extract_features over split: main.py's evaluation batch on
    this device first, then the other usual choice."""
    mine = engine.eval_batch_size(ours.args, device)
    rates = {}
    for batch in (mine, 128 if mine == 1024 else 1024):
        extract = lambda: engine.extract_features(  # noqa: E731
            ours.net.model, split, ours.ddp, ours.args.feat_dim, batch, ours.memory_format,
            ours.net.amp_dtype)
        rates[batch] = common.median_rate(extract, len(split), device, repeats=repeats, warmup=1)
    return rates


def random_features(n, feat_dim, device, seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, feat_dim, generator=g).to(device)
    return features, torch.randint(0, common.NUM_CLASSES, (n,), generator=g).to(device)


def evaluation_seconds(ours, split, train_f, train_l, device):
    """One engine.evaluate as main.py runs it after an epoch (the deciding split and a clean
    training subset of its size: `split` both), after one warm-up: its seconds, the seconds
    spent inside its engine.extract_features calls, and what it returns."""
    data = SimpleNamespace(clean=split, val=split, test=None, unseen=None, classes=split.classes)
    evaluate = lambda: engine.evaluate(ours.net, data, ours.args, ours.ddp, device, False,  # noqa: E731
                                       train_f, train_l)
    evaluate()
    extract_features, extracting = engine.extract_features, []

    def extract(*args, **kwargs):
        seconds, out = common.timed(lambda: extract_features(*args, **kwargs), device)
        extracting.append(seconds)
        return out
    with mock.patch.object(engine, "extract_features", extract):
        seconds, (stats, centers, kept) = common.timed(evaluate, device)
    return seconds, sum(extracting), stats, centers, kept


def writing_seconds(ours, stats, centers, kept, train_f, train_l):
    """Seconds of rundir.save_snapshot (main.py's arrays) and of one rundir.save_checkpoint
    of rundir.checkpoint_state, into a temporary run directory."""
    args = ours.args
    record = {"epoch": 1, "lr": args.lr, "train_loss": 0.0, **stats, "seconds": 1.0}
    snap = rundir.snapshot_indices(len(train_l), args.feat_dim, args.snapshot_size, train_l.device)
    keep = rundir.snapshot_indices(len(kept["val_labels"]), args.feat_dim, args.snapshot_size,
                                   train_l.device)
    arrays = {"train_features": train_f[snap], "train_labels": train_l[snap], "centers": centers,
              "classes": np.array([str(k) for k in range(common.NUM_CLASSES)], dtype=str),
              "val_features": kept["val_features"][keep], "val_labels": kept["val_labels"][keep]}
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        snapshot_s, _ = common.timed(lambda: rundir.save_snapshot(folder, 1, arrays, record))
        checkpoint_s, _ = common.timed(lambda: rundir.save_checkpoint(
            rundir.checkpoint_state(ours.net, ours.optimizer, None, None, 1,
                                    {"val_acc": 0.0, "epoch": 1}, [record], args, rng_state()),
            os.path.join(folder, "last.pt")))
    return snapshot_s, checkpoint_s


def measure_pair(model, loss, cfg, data, device):
    """The training epoch's estimated seconds and the per-epoch extras of one (model, loss)."""
    ours = common.Ours(model, loss, cfg, data, device)
    for _ in range(cfg.warmup):
        ours.run()
    runs, _ = common.interleaved({"ours": ours}, cfg.repeats, common.log, f"{model}/{loss}")
    img_s = statistics.median(runs["ours"])
    epoch_s = common.epoch_seconds(img_s, cfg.batch_size)
    split = common.repeat_split(data.val, cfg.eval_images)
    rates = extraction_rates(ours, split, device, repeats=1 if cfg.quick else 2)
    n_train = common.TRAIN_IMAGES // cfg.batch_size * cfg.batch_size
    train_f, train_l = random_features(n_train, cfg.feat_dim, device, seed=0)
    evaluate_s, extract_s, stats, centers, kept = evaluation_seconds(ours, split, train_f, train_l,
                                                                     device)
    snapshot_s, checkpoint_s = writing_seconds(ours, stats, centers, kept, train_f, train_l)
    mine = next(iter(rates))
    overhead_s = evaluate_s + snapshot_s + checkpoint_s
    return {
        "ours_img_s": img_s, "ours_img_s_repeats": runs["ours"], "train_epoch_s_est": epoch_s,
        "eval_images": cfg.eval_images, "eval_batch_size": mine, "eval_img_s": rates[mine],
        "eval_img_s_by_batch": {str(b): r for b, r in rates.items()},
        "evaluate_s": evaluate_s, "extract_s": extract_s, "metrics_s": evaluate_s - extract_s,
        "snapshot_s": snapshot_s, "checkpoint_s": checkpoint_s,
        "overhead_s": overhead_s, "overhead_frac": overhead_s / epoch_s,
        # the extraction's seconds scaled by the rate measured at each batch size
        "overhead_frac_by_batch": {str(b): (overhead_s + extract_s * (rates[mine] / r - 1)) / epoch_s
                                   for b, r in rates.items()},
    }


def table(report):
    rows = common.pair_rows(report["results"])
    mine = rows[0]["eval_batch_size"]
    other = next(b for b in rows[0]["eval_img_s_by_batch"] if int(b) != mine)
    lines = common.header("bench/epoch_overhead.py", report["meta"]) + [""]
    lines += common.fixed_width(rows, common.PAIR_COLUMNS + [
        ("ours img/s", 11, lambda r: f"{r['ours_img_s']:.0f}"),
        ("epoch s*", 9, lambda r: f"{r['train_epoch_s_est']:.1f}"),
        ("extract s", 10, lambda r: f"{r['extract_s']:.3f}"),
        ("metrics s", 10, lambda r: f"{r['metrics_s']:.3f}"),
        ("evaluate s", 11, lambda r: f"{r['evaluate_s']:.3f}"),
        ("snapshot s", 11, lambda r: f"{r['snapshot_s']:.3f}"),
        ("ckpt s", 8, lambda r: f"{r['checkpoint_s']:.3f}"),
        ("ovh %", 7, lambda r: f"{100 * r['overhead_frac']:.1f}"),
        ("eval img/s", 11, lambda r: f"{r['eval_img_s']:.0f}"),
        (f"eval img/s b{other}", 17, lambda r: f"{r['eval_img_s_by_batch'][other]:.0f}"),
        (f"ovh % b{other}", 12, lambda r: f"{100 * r['overhead_frac_by_batch'][other]:.1f}"),
    ])
    n = report["meta"]["eval_images"]
    lines += ["", f"epoch s* = estimated training seconds of one full-MNIST epoch (59,904 images / "
              f"ours img/s). evaluate s = engine.evaluate: features of {n:,} clean training and "
              f"{n:,} deciding images (extract s, at the evaluation batch {mine} main.py uses "
              "here), then the metrics (metrics s). ovh % = (evaluate + snapshot + checkpoint) / "
              f"epoch s*; b{other}: the same with extract s scaled by the extraction rates measured "
              f"at batch {mine} and {other} (eval img/s)."]
    return "\n".join(lines)


def run(cfg):
    device = common.device_of(cfg)
    report = common.pair_report(cfg, device, measure_pair, eval_images=cfg.eval_images)
    return common.publish(NAME, cfg, device, report, table)


def parse_flags(argv=None):
    p = common.parser(__doc__, training=True)
    p.add_argument("--eval-images", type=int, default=None,
                   help="images of the deciding split, and of the clean training subset "
                   f"(default {common.VAL_IMAGES}, quick {QUICK_EVAL_IMAGES})")
    cfg = common.parse(p, argv)
    if cfg.eval_images is None:
        cfg.eval_images = QUICK_EVAL_IMAGES if cfg.quick else common.VAL_IMAGES
    if cfg.eval_images <= 0:
        p.error("--eval-images must be positive")
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
