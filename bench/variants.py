"""Which options of the training step pay on this machine: bf16 autocast (--amp), the
channels_last memory format (on, and off), torch.compile, other thread counts, a center crop?

    python bench/variants.py --data-dir <MNIST root> --amp --channels-last --compile --threads 1,4
    python bench/variants.py --data-dir <MNIST root>   # no option named: --amp --channels-last
    python bench/variants.py --quick --fake            # smoke run on generated data
    python bench/variants.py --device cuda --amp       # on a GPU
    python bench/variants.py --data-dir <MNIST root> --models resnet-s2 --losses xent \
        --batch-size 64 --amp --center-crops 24      # quick's crop on MNIST, in bf16

Each option named is timed beside the project's default step (bench/common.py's Ours: main.py's
flags with their device-dependent defaults), and so are their combinations (amp+channels_last,
and all of them); --channels-last also times the contiguous format, as main.py's default on
CPU is channels_last. Repeats are interleaved (the order alternating); speedups are medians
of the paired per-repeat ratios to the default step; setup s is building the variant and its
first (warm-up) pass, torch.compile's compilation included.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

NAME = "variants"
OPTIONS = ("amp", "channels_last", "compile")


def variants_of(cfg):
    """(name, options) of the step to time beside its default: each one asked for, and their
    combinations (amp+channels_last, and all of them)."""
    on = [k for k in OPTIONS if getattr(cfg, k)]
    out = [(k, {k: True}) for k in on]
    if cfg.channels_last:  # main.py's default on CPU: time the contiguous format as well
        out.append(("contiguous", {"channels_last": False}))
    if len(on) == 3:
        out.append(("amp+channels_last", {"amp": True, "channels_last": True}))
    if len(on) > 1:
        out.append(("+".join(on), {k: True for k in on}))
    # a center crop with every option asked for: what it saves on top of them
    out += [("+".join(on + [f"center_crop={size}"]), {**{k: True for k in on}, "center_crop": size})
            for size in cfg.center_crops]
    return out + [(f"threads={n}", {"threads": n}) for n in cfg.threads]


def measure_pair(model, loss, cfg, data, device):
    """The default step and every variant of one (model, loss), interleaved."""
    default = common.Ours(model, loss, cfg, data, device)
    runners, setup = {"default": default}, {}
    for name, options in variants_of(cfg):
        setup[name], runners[name] = common.timed(lambda: warm(common.Ours(
            model, loss, cfg, data, device, options)), device)
    for _ in range(cfg.warmup):
        default.run()
    runs, _ = common.interleaved(runners, cfg.repeats, common.log, f"{model}/{loss}")
    args = default.args
    return {
        "default_img_s": statistics.median(runs["default"]),
        "default_img_s_repeats": runs["default"],
        "default": {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile},
        "variants": {name: {"img_s": statistics.median(runs[name]),
                            "speedup": common.paired_ratio(runs, name, "default"),
                            "img_s_repeats": runs[name], "setup_s": setup[name]}
                     for name in setup},
    }


def warm(runner):
    runner.run()  # compiles, where it compiles
    return runner


def table(report):
    pairs = common.pair_rows(report["results"])
    rows = [row for r in pairs for row in (
        {"model": r["model"], "loss": r["loss"], "option": "default", "img_s": r["default_img_s"],
         "speedup": 1.0, "setup_s": None},
        *({"model": r["model"], "loss": r["loss"], "option": name, **v}
          for name, v in r["variants"].items()))]
    default = pairs[0]["default"]
    lines = common.header("bench/variants.py", report["meta"]) + [""]
    lines += common.fixed_width(rows, common.PAIR_COLUMNS + [
        ("option", -22, lambda r: r["option"]),
        ("img/s", 8, lambda r: f"{r['img_s']:.0f}"),
        ("vs default", 11, lambda r: f"{r['speedup']:.2f}x"),
        ("setup s", 9, lambda r: "" if r["setup_s"] is None else f"{r['setup_s']:.1f}"),
    ])
    lines += ["", "default: main.py's step on this device (" + ", ".join(
        f"{k} {'on' if v else 'off'}" for k, v in default.items()) + "). vs default: median of "
        "the paired per-repeat ratios; setup s: building the variant and its first (warm-up) "
        "pass, torch.compile's compilation included."]
    return "\n".join(lines)


def run(cfg):
    device = common.device_of(cfg)
    report = common.pair_report(cfg, device, measure_pair,
                                variants=[name for name, _ in variants_of(cfg)])
    return common.publish(NAME, cfg, device, report, table)


def parse_flags(argv=None):
    p = common.parser(__doc__, training=True)
    p.add_argument("--amp", action="store_true", help="time the step with bf16 autocast")
    p.add_argument("--channels-last", action="store_true",
                   help="time it with channels_last on, and off (contiguous)")
    p.add_argument("--compile", action="store_true", help="time it under torch.compile")
    p.add_argument("--threads", default="", help="time it with torch.set_num_threads(N), e.g. 1,4")
    p.add_argument("--center-crops", default="",
                   help="time it on the center SxS of the images (main.py --center-crop), with "
                   "the other options named, e.g. 24")
    cfg = common.parse(p, argv)
    cfg.threads = common.int_list(p, cfg.threads, "--threads")
    cfg.center_crops = common.int_list(p, cfg.center_crops, "--center-crops")
    if not (cfg.amp or cfg.channels_last or cfg.compile or cfg.threads):
        cfg.amp = cfg.channels_last = True
    return cfg


if __name__ == "__main__":
    common.cli(run, parse_flags())
