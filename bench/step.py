"""Is the project's training step faster than the usual DataLoader recipe, and how close does
it come to the machine's FLOP rate?

    python bench/step.py --data-dir <MNIST root>     # LeNet++ and the ResNet, standalone and cent, batch 128
    python bench/step.py --quick --fake              # smoke run on generated data, well under a minute
    python bench/step.py --device cuda               # on a GPU

"ours" is the project's own code: engine.build_net, optim.build_optimizer and
engine.train_one_epoch over datasets.train_batches (the whole split as uint8 on the device,
batched augmentation), on a split of exactly --steps batches. The baseline is the usual
recipe, built here: torchvision.datasets.MNIST + per-image RandomRotation(5), ToTensor +
DataLoader(num_workers = cores, shuffle, drop_last), the same model and objective classes,
SGD, loss.item() every step. Repeats of ours and the baseline are interleaved (the order
alternating) so that machine noise hits both alike; throughputs are medians over repeats,
ratios medians of the paired per-repeat ratios. Beside them: forward + backward FLOPs per
image (torch.utils.flop_counter), the achieved GFLOP/s against a matmul and a convolution
rate measured in the same run, and peak memory.
"""
import os
import statistics
import sys

import torch
import torchvision
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from losses import build_objective  # noqa: E402
from models import build_model  # noqa: E402

NAME = "step"


class Baseline:
    """The conventional recipe: torchvision dataset, per-image PIL transforms in DataLoader
    workers, the model and objective called directly, SGD, loss.item() every step."""

    def __init__(self, model, loss, cfg, data, device):
        transform = transforms.Compose([transforms.RandomRotation(5), transforms.ToTensor()])
        ds = torchvision.datasets.MNIST(data.data_dir, train=True, download=False, transform=transform)
        self.loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                 num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                                 pin_memory=device.type == "cuda")
        torch.manual_seed(0)
        self.model = build_model(model, cfg.feat_dim, 1, 28).to(device)
        self.objective = build_objective(loss, common.NUM_CLASSES, cfg.feat_dim).to(device)
        params = list(self.model.parameters()) + list(self.objective.parameters())
        self.optimizer = torch.optim.SGD(params, lr=common.lr_of(model), momentum=0.9)
        self.device, self.steps, self.batch_size = device, cfg.steps, cfg.batch_size
        self.iterator = iter(self.loader)

    def next_batch(self):
        try:
            return next(self.iterator)
        except StopIteration:  # a new epoch (persistent workers: no new processes)
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def train_steps(self):
        running = 0.0
        for _ in range(self.steps):
            x, y = self.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            terms = self.objective(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            running += terms["loss"].item()
        return running

    def run(self):
        """One timed pass; images/s."""
        self.model.train()
        seconds, _ = common.timed(self.train_steps, self.device)
        return self.steps * self.batch_size / seconds

    def worker_pids(self):
        return [w.pid for w in getattr(self.iterator, "_workers", [])]

    def close(self):
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del self.iterator


def flops_per_image(ours, batch_size):
    """Forward + backward FLOPs of one training step (uncompiled net), per image."""
    x = torch.rand(batch_size, *ours.split.images.shape[1:], device=ours.device)
    x = x.contiguous(memory_format=ours.memory_format)
    y = torch.arange(batch_size, device=ours.device) % common.NUM_CLASSES
    counter = FlopCounterMode(display=False)
    with counter:
        _, terms = ours.net(x, y)
        terms["loss"].backward()
    ours.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def measure_pair(model, loss, cfg, data, device):
    """Ours against the baseline for one (model, loss): throughputs, FLOP rate, memory."""
    memory = common.PeakMemory(device)
    runners = {"ours": common.Ours(model, loss, cfg, data, device),
               "baseline": Baseline(model, loss, cfg, data, device)}
    seconds, _ = common.timed(lambda: [r.run() for _ in range(cfg.warmup) for r in runners.values()])
    common.log(f"  {model}/{loss}: warm-up {seconds:.1f}s")
    runs, peaks = common.interleaved(runners, cfg.repeats, common.log, f"{model}/{loss}", memory,
                                     watched=("ours", "baseline"))
    workers_mb = [common.process_status_mb(pid, "VmHWM:") for pid in runners["baseline"].worker_pids()]
    runners["baseline"].close()
    ours_img_s = statistics.median(runs["ours"])
    flops = flops_per_image(runners["ours"], cfg.batch_size)
    return {
        "ours_img_s": ours_img_s,
        "baseline_img_s": statistics.median(runs["baseline"]),
        "ratio": common.paired_ratio(runs, "ours", "baseline"),
        "ours_img_s_repeats": runs["ours"],
        "baseline_img_s_repeats": runs["baseline"],
        "flops_per_image": flops,
        "achieved_gflops": flops * ours_img_s / 1e9,
        "train_epoch_s_est": common.epoch_seconds(ours_img_s, cfg.batch_size),
        "peak_mem_mb_ours": peaks["ours"][0],
        "peak_mem_mb_baseline": peaks["baseline"][0],
        "peak_mem_growth_mb_ours": peaks["ours"][1],
        "peak_mem_growth_mb_baseline": peaks["baseline"][1],
        "baseline_workers_peak_rss_mb": sum(m for m in workers_mb if m is not None),
    }


def table(report):
    meta, rates = report["meta"], report["rates"]
    lines = common.header("bench/step.py", meta) + [
        f"baseline workers {meta['workers']};  fp32 torch.mm {common.MM_SIZE}x{common.MM_SIZE}: "
        f"{rates['mm_gflops']:.0f} GFLOP/s;  conv ref (128x64x14x14, 64->64 5x5): "
        f"{rates['conv_ref_gflops']:.0f} GFLOP/s", ""]
    lines += common.fixed_width(common.pair_rows(report["results"]), common.PAIR_COLUMNS + [
        ("ours img/s", 11, lambda r: f"{r['ours_img_s']:.0f}"),
        ("base img/s", 11, lambda r: f"{r['baseline_img_s']:.0f}"),
        ("ratio", 7, lambda r: f"{r['ratio']:.2f}"),
        ("MFLOP/img", 10, lambda r: f"{r['flops_per_image'] / 1e6:.0f}"),
        ("GFLOP/s", 9, lambda r: f"{r['achieved_gflops']:.0f}"),
        ("/mm", 6, lambda r: f"{r['frac_of_mm']:.2f}"),
        ("/conv", 6, lambda r: f"{r['frac_of_conv_ref']:.2f}"),
        ("epoch s*", 9, lambda r: f"{r['train_epoch_s_est']:.1f}"),
        ("MB o/b", 10, lambda r: f"{r['peak_mem_mb_ours']:.0f}/{r['peak_mem_mb_baseline']:.0f}"),
        ("step +MB o/b", 14, lambda r: f"{r['peak_mem_growth_mb_ours']:.0f}/"
                                       f"{r['peak_mem_growth_mb_baseline']:.0f}"),
        ("workers MB", 11, lambda r: f"{r['baseline_workers_peak_rss_mb']:.0f}"),
    ])
    lines += ["", "ratio: median of the paired per-repeat ratios ours / baseline. /mm, /conv: "
              "GFLOP/s over the reference rates (their start and end mean). epoch s* = "
              "estimated training seconds of one full-MNIST epoch (59,904 images / ours img/s).",
              f"MB o/b: the peak ({meta['peak_mem_kind']}) while ours / the baseline ran, "
              "libraries and both datasets included; step +MB: its growth over the run's start; "
              "workers MB: the baseline's DataLoader workers' peak RSS, summed (shared pages "
              "counted in each)."]
    if "resnet_epoch_s_est" in report:
        lines += [f"reference ResNet, full-MNIST training epoch: {report['resnet_epoch_s_est']:.1f} s "
                  f"(estimate, {report['resnet_epoch_loss']}; without the per-epoch overhead, "
                  "bench/epoch_overhead.py)"]
    return "\n".join(lines)


def run(cfg):
    device = common.device_of(cfg)
    mm1, conv1 = common.matmul_gflops(device)
    report = common.pair_report(cfg, device, measure_pair, workers=cfg.workers)
    mm2, conv2 = common.matmul_gflops(device)  # again at the end: the machine's rate may drift
    rates = {"mm_gflops": (mm1 + mm2) / 2, "conv_ref_gflops": (conv1 + conv2) / 2,
             "mm_gflops_start_end": [mm1, mm2], "conv_ref_gflops_start_end": [conv1, conv2],
             "mm": f"fp32 torch.mm {common.MM_SIZE}x{common.MM_SIZE} @ {common.MM_SIZE}x"
                   f"{common.MM_SIZE}, median of 10",
             "conv_ref": "fp32 F.conv2d 128x64x14x14, 64->64 5x5 pad 2 (LeNet++ conv4), median of 10"}
    results = report["results"]
    for per_loss in results.values():  # fractions against the start/end mean rate
        for r in per_loss.values():
            r["frac_of_mm"] = r["achieved_gflops"] / rates["mm_gflops"]
            r["frac_of_conv_ref"] = r["achieved_gflops"] / rates["conv_ref_gflops"]
    report["rates"] = rates
    if "resnet" in results:
        loss = next(iter(results["resnet"]))
        report["resnet_epoch_s_est"] = results["resnet"][loss]["train_epoch_s_est"]
        report["resnet_epoch_loss"] = loss
    return common.publish(NAME, cfg, device, report, table)


def parse_flags(argv=None):
    p = common.parser(__doc__, training=True)
    p.add_argument("--workers", type=int, default=common.cores(), help="baseline DataLoader workers")
    cfg = common.parse(p, argv)
    if cfg.workers < 0:
        p.error("--workers must not be negative")
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
