"""How long do the retrieval metrics (precision@1, R-precision, MAP@R) take, against the
evaluation pass they are added to?

    python bench/retrieval.py [--n 10000] [--dims 2,128] [--repeats 3] [--device cpu] [--threads N]
    python bench/retrieval.py --quick --fake         # smoke run, well under a minute

On --n random features of each of --dims dimensions (losses.retrieval_metrics), and, for the
evaluation pass, engine.extract_features of the reference ResNet (built by engine.build_net
from main.py's flags, at main.py's evaluation batch and memory format on this device) over as
many generated 28x28 images (fakedata.py). Median seconds of interleaved repeats after one
warm-up. The data is always generated.
"""
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
import datasets  # noqa: E402
import engine  # noqa: E402
import fakedata  # noqa: E402
from losses import retrieval_metrics  # noqa: E402
from utils import Dist  # noqa: E402

NAME = "retrieval"


def jobs(cfg, device):
    """{name: (what it is, fn)}: the evaluation pass and the metrics of each dimension."""
    rng = np.random.default_rng(0)
    labels_np = rng.integers(0, cfg.classes, cfg.n)
    labels = torch.from_numpy(labels_np).to(device)
    images = torch.from_numpy(fakedata.class_images(labels_np, 28, 1, rng)).permute(0, 3, 1, 2)
    split = datasets.Split(images.contiguous().to(device), labels, [str(k) for k in range(cfg.classes)])
    args = common.project_args("resnet", "standalone", {}, 128, 2, device)
    net, _ = engine.build_net(args, cfg.classes, 1, 28, device)
    batch, memory_format = engine.eval_batch_size(args, device), engine.memory_format_of(args)
    out = {"evaluation_pass": (f"evaluation pass, ResNet, {cfg.n} images, batch {batch}",
                               lambda: engine.extract_features(net.model, split, Dist(), 2, batch,
                                                               memory_format))}
    g = torch.Generator().manual_seed(0)
    for d in cfg.dims:
        features = torch.randn(cfg.n, d, generator=g).to(device)
        out[f"retrieval_{d}d"] = (f"retrieval metrics, {cfg.n} x {d}-D",
                                  lambda f=features: retrieval_metrics(f, labels))
    return out


def run(cfg):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = common.device_of(cfg)
    meta = common.meta(cfg, device, n=cfg.n, dims=cfg.dims, classes=cfg.classes, repeats=cfg.repeats)
    todo = jobs(cfg, device)
    for _, fn in todo.values():  # warm-up
        fn()
    times = {name: [] for name in todo}
    for _ in range(cfg.repeats):
        for name, (_, fn) in todo.items():
            times[name].append(common.timed(fn, device)[0])
    results = {name: {"what": todo[name][0], "median_s": statistics.median(t), "min_s": min(t),
                      "repeats_s": t} for name, t in times.items()}
    return common.publish(NAME, cfg, device, {"meta": meta, "results": results}, table)


def table(report):
    lines = common.header("bench/retrieval.py", report["meta"])
    lines += [f"median of {report['meta']['repeats']} (interleaved, after one warm-up)", ""]
    lines += common.fixed_width(report["results"].values(), [
        ("what", -50, lambda r: r["what"]),
        ("median s", 9, lambda r: f"{r['median_s']:.2f}"),
        ("min s", 8, lambda r: f"{r['min_s']:.2f}"),
    ])
    return "\n".join(lines)


def parse_flags(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--n", type=int, default=None, help="features and images (default 10000, quick 1000)")
    p.add_argument("--dims", default="2,128", help="feature dimensions, comma-separated")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    cfg = common.parse(p, argv)
    cfg.n = cfg.n if cfg.n is not None else (1000 if cfg.quick else 10_000)
    cfg.repeats = cfg.repeats if cfg.repeats is not None else (1 if cfg.quick else 3)
    cfg.dims = common.int_list(p, cfg.dims, "--dims")
    if cfg.n < 2 or cfg.classes < 1 or cfg.repeats < 1 or (cfg.threads is not None and cfg.threads < 1):
        p.error("--n must be at least 2, --classes, --repeats and --threads positive")
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
