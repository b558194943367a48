"""Time the retrieval metrics (precision@1, R-precision, MAP@R) on random features against
the evaluation pass they are added to: the small ResNet over as many random 28x28 images.

    python bench/retrieval.py [--n 10000] [--dims 2,128] [--repeats 3] [--device cpu] [--threads N]

Prints the median seconds of each (interleaved repeats after one warm-up).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import datasets  # noqa: E402
import main  # noqa: E402
from losses import retrieval_metrics  # noqa: E402
from models import build_model  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main_(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dims", default="2,128")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, a.classes, (a.n,), generator=g).to(device)
    features = {d: torch.randn(a.n, d, generator=g).to(device) for d in map(int, a.dims.split(","))}
    images = torch.randint(0, 256, (a.n, 1, 28, 28), dtype=torch.uint8, generator=g)
    split = datasets.Split(images.to(device), labels, [str(k) for k in range(a.classes)])
    model = build_model("resnet", 2, 1, 28).to(device, memory_format=torch.channels_last)
    batch = 1024 if device.type == "cuda" else 128  # main.eval_batch_size
    jobs = {f"evaluation pass, ResNet, {a.n} images": lambda: main.extract_features(
        model, split, main.Dist(), 2, batch, torch.channels_last)}
    for d, f in features.items():
        jobs[f"retrieval metrics, {a.n} x {d}-D"] = lambda f=f: retrieval_metrics(f, labels)
    times = {name: [] for name in jobs}
    for name, job in jobs.items():  # warm-up
        job()
    for _ in range(a.repeats):
        for name, job in jobs.items():
            times[name].append(timed(job, device))
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {a.repeats}")
    for name, t in times.items():
        print(f"{name:<45} {statistics.median(t):7.2f} s   (min {min(t):.2f})")


if __name__ == "__main__":
    main_()
