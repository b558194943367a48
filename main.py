"""Train and evaluate an objective (xent, cent, standalone center loss, ...; see losses/);
write the run directory.

    python main.py --loss standalone --dataset mnist --feat-dim 2
    torchrun --nproc-per-node 2 main.py --loss cent --dataset cifar10

Flags -> data + model + objective -> epoch loop -> log/<run>/ -> pictures in imgs/<run>/.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

import datasets
import recipes
import tboard
import visualize
from losses import (OBJECTIVES, build_objective, center_statistics, class_means, declared,
                    flag_help, hyper_problems, nearest_center, resolve_hypers, retrieval_metrics)
from models import MODELS, build_model
from optim import (OPTIMIZERS, PER_STEP_SCHEDULERS, SCHEDULERS, build_averaged, build_optimizer,
                   build_scheduler, learning_rates)
from utils import (Dist, OneLineParser, RunLog, UserError, atomic_write_text, is_locked,
                   load_checkpoint, lock_run_dir, pick_device, rng_state,
                   save_checkpoint, seed_everything, set_rng_state)

# Flags that may differ from the checkpoint's on --resume: they do not change what is computed
# (or, for --epochs, only how far the run goes).
RESUMABLE_FLAGS = {"resume", "epochs", "device", "data_dir", "download", "progress", "plots",
                   "img_dir", "log_interval", "log_dir", "tensorboard"}


# ----------------------------------------------------------------------------- flags

def build_parser():
    p = OneLineParser(description="Train a feature-learning objective (--loss) and watch the "
                      "feature space form.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", default="reference", choices=list(recipes.RECIPES),
                   help="preset of training settings (recipes.py); flags you type override it")
    g = p.add_argument_group("objective")
    g.add_argument("--loss", default="standalone", choices=list(OBJECTIVES))
    # Each objective's hyperparameters, as the registry declares them. Not given, a flag is
    # absent here and check_args fills in the chosen loss's own default.
    for name, decls in declared().items():
        h = decls[0][1]
        g.add_argument(*h.flags, dest=name, type=h.type, choices=h.choices,
                       default=argparse.SUPPRESS, help=flag_help(decls))
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="mnist", type=datasets.canonical_name,
                   choices=list(datasets.DATASETS), help="cifar-10 is accepted for cifar10")
    g.add_argument("--data-dir", "--data_dir", default="./data")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download the dataset when it is not in --data-dir")
    g.add_argument("--subset", type=int, default=None,
                   help="use at most N training and N test samples (a fixed choice)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet", choices=list(MODELS),
                   help="resnet: the reference runs' small pre-activation ResNet; lenet: LeNet++ "
                   "(no BatchNorm: train it with --lr 0.001)")
    g.add_argument("--feat-dim", "--feat_dim", type=int, default=2)
    g.add_argument("--sync-bn", "--sync_bn", action="store_true",
                   help="torchrun on CUDA: SyncBatchNorm across ranks")
    g = p.add_argument_group("optimizer")
    g.add_argument("--epochs", "--max-epoch", "--max_epoch", dest="epochs", type=int, default=100)
    g.add_argument("--batch-size", "--batch_size", type=int, default=128,
                   help="the global batch (split across ranks under torchrun)")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="sgd (the reference) or adamw (--momentum and --nesterov unused)")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--lr-cent", "--lr_cent", type=float, default=None,
                   help="learning rate of the centers (default: --lr)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False,
                   help="Nesterov momentum")
    g.add_argument("--weight-decay", "--weight_decay", type=float, default=0.0)
    g.add_argument("--wd-exempt", "--wd_exempt", action=argparse.BooleanOptionalAction,
                   default=False, help="no weight decay on BatchNorm, biases and centers")
    g.add_argument("--ema-decay", "--ema_decay", type=float, default=None,
                   help="evaluate (and checkpoint) an exponential moving average of the weights "
                   "and BatchNorm buffers, updated every step with this decay (e.g. 0.998; 0: off)")
    g.add_argument("--scheduler", default="plateau", choices=SCHEDULERS,
                   help="plateau: the reference ReduceLROnPlateau on val accuracy (factor 0.2, "
                   "patience 10, rel. threshold 0.1); step: x gamma every --step-size epochs; "
                   "warmup-cosine: per step, linear warm-up over --warmup-epochs, then cosine to 0")
    g.add_argument("--warmup-epochs", "--warmup_epochs", type=float, default=1.0,
                   help="warmup-cosine: length of the linear warm-up, in epochs")
    g.add_argument("--step-size", "--step_size", "--stepsize", dest="step_size", type=int, default=20)
    g.add_argument("--gamma", type=float, default=0.5)
    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps, cpu")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the model")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step")
    g.add_argument("--channels-last", "--channels_last", action=argparse.BooleanOptionalAction,
                   default=None, help="channels_last memory format for images and convolutions "
                   "(default: on CPU, and on CUDA with --amp)")
    g = p.add_argument_group("run")
    g.add_argument("--log-dir", "--log_dir", default="log")
    g.add_argument("--img-dir", "--img_dir", default="imgs")
    g.add_argument("--name", default=None, help="suffix of the run directory's name")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--eval-every", "--eval_every", "--eval-freq", "--eval_freq", dest="eval_every",
                   type=int, default=1, help="evaluate every N epochs (and after the last)")
    g.add_argument("--log-interval", "--log_interval", type=int, default=20,
                   help="steps between progress-bar updates and the non-finite check "
                   "(the only host-device syncs inside an epoch)")
    g.add_argument("--snapshot-size", "--snapshot_size", type=int, default=5000,
                   help="features above 2-D: how many (fixed) samples per split to keep per epoch")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last completed epoch")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal)")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the GIFs and PNGs at the end")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to <run>/tb/ (needs the tensorboard package)")
    return p


def parse_args(argv=None):
    """The parsed flags and the set of flags the user actually typed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unset = object()
    probe = build_parser()
    probe.set_defaults(**{a.dest: unset for a in probe._actions if a.dest != "help"})
    explicit = {k for k, v in vars(probe.parse_args(argv)).items() if v is not unset}
    recipes.apply_recipe(args, explicit)
    check_args(args, parser)
    return args, explicit


def check_args(args, parser):
    for flag in ("feat_dim", "epochs", "batch_size", "subset", "eval_every", "log_interval",
                 "step_size", "snapshot_size"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    vars(args).update(resolve_hypers(args.loss, vars(args)))
    for problem in hyper_problems(args.loss, vars(args)):
        parser.error(problem)
    for flag in ("weight_decay", "momentum", "warmup_epochs"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative, got {getattr(args, flag)}")
    if args.ema_decay is not None and not 0 <= args.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1) (0: off), got {args.ema_decay}")
    for flag in ("lr", "lr_cent", "gamma"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")


def run_name(args):
    return f"{args.loss}-{args.dataset}-feat={args.feat_dim}" + (f"-{args.name}" if args.name else "")


# ----------------------------------------------------------------------------- pieces

class Net(nn.Module):
    """Feature extractor + objective as one module, so DistributedDataParallel keeps the
    objective's parameters (centers, softmax head) in step on every rank as well."""

    def __init__(self, model, objective, amp_dtype=None):
        super().__init__()
        self.model = model
        self.objective = objective
        self.amp_dtype = amp_dtype

    def forward(self, images, labels):
        device_type = images.device.type
        with torch.autocast(device_type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None):
            features = self.model(images)
        if self.amp_dtype is not None:
            features = features.float()  # the objective (pairwise distances, logs) in fp32
        return features, self.objective(features, labels)


def resolve_auto(args, device):
    """Fill in the flags whose default depends on the device. bench/train_step.py measured, on a 2-core
    CPU: channels_last 1.2x faster training steps and evaluation (fp32)."""
    if args.channels_last is None:
        args.channels_last = device.type == "cpu" or args.amp
    return args


def eval_batch_size(args, device):
    """Evaluation batch: large on CUDA; on CPU the training batch, which bench/train_step.py measured
    1.6-3.3x faster than batches of 1024 (those fall out of the caches)."""
    return 1024 if device.type == "cuda" else args.batch_size


def memory_format_of(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


def build_net(args, num_classes, channels, image_size, device):
    """The feature extractor and objective of the flags as one Net on the device, and the
    optimizer over both."""
    model = build_model(args.model, args.feat_dim, channels, image_size)
    # the loss's own hyperparameters; a run older than one of them gets its default
    objective = build_objective(args.loss, num_classes, args.feat_dim,
                                **{name: getattr(args, name, None) for name in declared()})
    if args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = Net(model, objective, torch.bfloat16 if args.amp else None)
    net = net.to(device, memory_format=memory_format_of(args))
    return net, build_optimizer(args, model, objective)


class NonFiniteError(Exception):
    pass


class Interrupted(Exception):
    pass


class StopRequest:
    """Ctrl-C / SIGTERM: finish the current step, then stop. A second signal stops at once."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- one epoch

def all_finite(tensors):
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def check_finite(term_log, names, params, epoch, first_step, ddp):
    """One host-device sync: are the loss terms since the last check, and the parameters,
    finite on every rank? If not, name the first bad step and term."""
    flags = torch.stack([~torch.isfinite(term_log).all(), ~all_finite(params)]).to(torch.int32)
    flags = ddp.max(flags)
    if not flags.any():
        return
    bad = ~torch.isfinite(term_log)
    if bad.any():
        step = bad.any(dim=1).nonzero()[0].item()
        # name the term that went bad, rather than the total it spoils
        culprits = [i for i in bad[step].nonzero().squeeze(1).tolist() if names[i] != "loss"]
        term = culprits[0] if culprits else names.index("loss")
        value = term_log[step, term].item()
        raise NonFiniteError(f"loss term {names[term]!r} is {value} at epoch {epoch}, "
                             f"step {first_step + step + 1}")
    raise NonFiniteError(f"a parameter became non-finite at epoch {epoch}, by step "
                         f"{first_step + len(term_log)}")


def train_one_epoch(step_net, net, optimizer, train, spec, epoch, args, ddp, stop=None, bar=True,
                    scheduler=None, averaged=None, tb=None):
    """One pass over the training split. Everything is accumulated on the device and read
    every --log-interval steps (progress, non-finite check) and once at the end. After every
    step: the per-step `scheduler` (if any) and the weight average `averaged` (if any).
    Returns the epoch's mean loss terms, train accuracy, and the features computed during
    the epoch (`features`, with `seen` marking the samples the epoch used)."""
    net.train()
    device = train.labels.device
    n, steps = len(train), len(train) // args.batch_size
    features = torch.zeros(n, args.feat_dim, device=device)
    seen = torch.zeros(n, dtype=torch.int32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    params = [p for p in net.parameters()]
    names, term_log, checked = None, None, 0
    batches = datasets.train_batches(train, args.batch_size, args.seed, epoch, spec, ddp.rank,
                                     ddp.world_size, memory_format_of(args))
    progress = tqdm(batches, total=steps, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                    disable=not bar, dynamic_ncols=True)
    for step, (x, y, idx) in enumerate(progress):
        f, terms = step_net(x, y)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if averaged is not None:
            averaged.update_parameters(net)
        with torch.no_grad():
            if names is None:
                names = list(terms)
                term_log = torch.zeros(steps, len(names), device=device)
            term_log[step] = torch.stack([terms[k].detach().float() for k in names])
            f = f.detach()
            features[idx] = f
            seen[idx] = 1
            correct += (net.objective.predict(f) == y).sum()
        if (step + 1) % args.log_interval == 0 or step + 1 == steps:
            check_finite(term_log[checked:step + 1], names, params, epoch, checked, ddp)
            recent = dict(zip(names, term_log[checked:step + 1].mean(0).tolist()))
            checked = step + 1
            progress.set_postfix({k: f"{v:.4g}" for k, v in recent.items()}, refresh=False)
            if tb is not None:  # rank 0's terms, already on the host: no extra sync
                tb.step_terms(recent, (epoch - 1) * steps + step + 1)
        if stop is not None and stop.signal is not None:
            raise Interrupted(f"stopped by signal {stop.signal} at epoch {epoch}, step {step + 1}")
    progress.close()
    means = ddp.sum(term_log.mean(0)) / ddp.world_size
    stats = {f"train_{k}": v for k, v in zip(names, means.tolist())}
    stats["train_acc"] = ddp.sum(correct).item() / (steps * args.batch_size)
    ddp.sum(features)
    ddp.sum(seen)
    return stats, features, seen.bool()


@torch.inference_mode()
def extract_features(model, split, ddp, feat_dim, batch_size=128, memory_format=torch.contiguous_format,
                     amp_dtype=None):
    """Features of a whole split (model in eval mode), each rank computing its shard."""
    model.eval()
    out = torch.zeros(len(split), feat_dim, device=split.labels.device)
    for x, _, idx in datasets.eval_batches(split, batch_size, ddp.rank, ddp.world_size, memory_format):
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            out[idx] = model(x).float()
    return ddp.sum(out)


@torch.inference_mode()
def evaluate(objective, train_features, train_labels, val_features, val_labels, num_classes):
    """Accuracies on whole splits. `nc`: nearest center, with the objective's centers or,
    where it has none (xent), the class means of the epoch's train features. Retrieval
    metrics (precision@1, R-precision, MAP@R) of the val features among themselves."""
    centers = objective.centers
    centers = class_means(train_features, train_labels, num_classes) if centers is None else centers.detach()
    stats = {"train_nc_acc": (nearest_center(train_features, centers) == train_labels).double().mean().item()}
    if val_features is not None:
        stats["val_acc"] = (objective.predict(val_features) == val_labels).double().mean().item()
        stats["val_nc_acc"] = (nearest_center(val_features, centers) == val_labels).double().mean().item()
        stats.update({f"val_{k}": v for k, v in retrieval_metrics(val_features, val_labels).items()})
        stats.update({f"val_{k}": v for k, v in
                      center_statistics(val_features, val_labels, centers).items()})
    return stats, centers


# ----------------------------------------------------------------------------- the run

def prepare_run(args, explicit):
    """Resolve the run directory; on --resume, the checkpoint and the args it was made with.
    Touches nothing on disk."""
    if args.resume:
        run_dir = args.resume.rstrip("/")
        if os.path.isfile(run_dir):  # a path to the checkpoint file itself
            run_dir = os.path.dirname(run_dir)
        if not os.path.isdir(run_dir):
            raise UserError(f"--resume {args.resume}: no such run directory")
        ckpt_path = os.path.join(run_dir, "last.pt")
        args_path = os.path.join(run_dir, "args.json")
        if os.path.exists(ckpt_path):
            ckpt = load_checkpoint(ckpt_path)
            saved = ckpt["args"]
        elif os.path.exists(args_path):
            ckpt = None  # stopped before its first epoch ended: start it again
            with open(args_path) as f:
                saved = json.load(f)
        else:
            raise UserError(f"{run_dir} holds neither last.pt nor args.json: not a run directory")
        for key in sorted(explicit - RESUMABLE_FLAGS):
            if key in saved and saved[key] != getattr(args, key):
                raise UserError(f"--{key.replace('_', '-')} {getattr(args, key)} does not match the "
                                f"checkpoint's {saved[key]} in {run_dir}; leave it out to resume")
        merged = {**vars(args), **saved}  # a flag newer than the checkpoint: its default
        merged.update({k: getattr(args, k) for k in explicit & RESUMABLE_FLAGS})
        merged["resume"] = args.resume
        return argparse.Namespace(**merged), run_dir, ckpt
    run_dir = os.path.join(args.log_dir, run_name(args))
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not args.overwrite:
        raise UserError(f"{run_dir} already exists: pass --resume {run_dir} to continue it, "
                        f"--overwrite to start it again, or --name to make another")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} exists and is not a directory")
    return args, run_dir, None


def make_run_dir(run_dir, args, fresh):
    """Create (or, fresh, empty) the run directory and write args.json. Returns the run's
    lock, held while the process lives."""
    if os.path.isdir(run_dir) and is_locked(run_dir):
        raise UserError(f"{run_dir} is being trained by another process right now")
    try:
        if fresh and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        lock = lock_run_dir(run_dir)
        # on resume too: --epochs may have grown, and the pictures read the plan from here
        atomic_write_text(os.path.join(run_dir, "args.json"), json.dumps(vars(args), indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from None
    return lock


def train(args, explicit):
    ddp = Dist()
    args, run_dir, ckpt = prepare_run(args, explicit)
    device = pick_device(args.device, ddp.local_rank)
    resolve_auto(args, device)
    ddp.init(device)
    if args.batch_size % ddp.world_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{ddp.world_size} ranks")
    if getattr(args, "tensorboard", False):
        tboard.summary_writer()  # missing package: one line, exit 2, before any file is touched
    if args.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    seed_everything(args.seed)
    spec = datasets.augmentation(args.dataset)
    train_split = datasets.load_split(args.dataset, args.data_dir, True, device, args.subset, args.download)
    val_split = datasets.load_split(args.dataset, args.data_dir, False, device, args.subset, args.download)
    if len(train_split) < args.batch_size:
        raise UserError(f"the training split has {len(train_split)} samples, fewer than one "
                        f"batch of {args.batch_size}")
    num_classes = len(train_split.classes)
    channels, size = train_split.images.shape[1], train_split.images.shape[-1]

    net, optimizer = build_net(args, num_classes, channels, size, device)
    memory_format, amp_dtype = memory_format_of(args), net.amp_dtype
    scheduler = build_scheduler(args, optimizer, len(train_split) // args.batch_size)
    per_step = args.scheduler in PER_STEP_SCHEDULERS
    averaged = build_averaged(net, args.ema_decay) if args.ema_decay else None
    evaluated = net if averaged is None else averaged.module

    start_epoch, history, best = 0, [], {"val_acc": None, "epoch": None}
    if ckpt is not None:
        try:
            net.model.load_state_dict(ckpt["model"])
            net.objective.load_state_dict(ckpt["objective"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if averaged is not None:
                averaged.load_state_dict(ckpt["averaged"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"the checkpoint in {run_dir} does not fit this model and objective: "
                            f"{str(e).strip().splitlines()[0]}") from None
        if scheduler is not None and ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start_epoch, history, best = ckpt["epoch"], list(ckpt["history"]), dict(ckpt["best"])

    step_net = net
    if ddp.enabled:
        step_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        step_net = torch.compile(step_net)

    log = RunLog(run_dir)
    if ddp.main:
        lock = make_run_dir(run_dir, args, fresh=args.resume is None)  # noqa: F841 (held)
        if args.resume:
            log.rewrite_metrics(history)
            log.info(f"resumed {run_dir} after epoch {start_epoch}")
        else:
            log.info(f"{run_name(args)}: {args.loss} loss, {args.model} model, feat_dim "
                     f"{args.feat_dim}, {len(train_split)} train / {len(val_split)} val samples, "
                     f"device {device}" + (f" x {ddp.world_size} ranks" if ddp.enabled else ""))
    snap_train = visualize.snapshot_indices(len(train_split), args.feat_dim, args.snapshot_size)
    snap_val = visualize.snapshot_indices(len(val_split), args.feat_dim, args.snapshot_size)
    bar = ddp.main and (args.progress if args.progress is not None else sys.stderr.isatty())
    tb = None
    if getattr(args, "tensorboard", False) and ddp.main:
        # from its first global step on, TensorBoard drops what a stopped run wrote (tboard.py)
        first_step = start_epoch * (len(train_split) // args.batch_size) + 1
        tb = tboard.Board(run_dir, vars(args), purge_step=first_step)

    with StopRequest() as stop:
        try:
            for epoch in range(start_epoch + 1, args.epochs + 1):
                t0 = time.perf_counter()
                lrs = learning_rates(optimizer)  # at the epoch's start
                stats, train_features, seen = train_one_epoch(
                    step_net, net, optimizer, train_split, spec, epoch, args, ddp, stop, bar,
                    scheduler if per_step else None, averaged, tb)
                evaluating = epoch % args.eval_every == 0 or epoch == args.epochs
                val_features = None
                if evaluating:
                    val_features = extract_features(evaluated.model, val_split, ddp, args.feat_dim,
                                                    eval_batch_size(args, device), memory_format,
                                                    amp_dtype)
                seen_idx = seen.nonzero().squeeze(1)
                eval_stats, centers = evaluate(evaluated.objective, train_features[seen_idx],
                                               train_split.labels[seen_idx], val_features,
                                               val_split.labels, num_classes)
                if scheduler is not None and not per_step:
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        if evaluating:
                            scheduler.step(eval_stats["val_acc"])
                    else:
                        scheduler.step()
                record = {"epoch": epoch, **lrs}
                record.update(stats)
                record.update(eval_stats)
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                improved = evaluating and (best["val_acc"] is None or record["val_acc"] > best["val_acc"])
                if improved:
                    best = {"val_acc": record["val_acc"], "epoch": epoch}
                if ddp.main:
                    keep = seen[snap_train].nonzero().squeeze(1)
                    visualize.save_snapshot(
                        run_dir, epoch, train_features[snap_train[keep]],
                        train_split.labels[snap_train[keep]],
                        None if val_features is None else val_features[snap_val],
                        val_split.labels[snap_val], centers, record)
                    state = {"model": net.model.state_dict(), "objective": net.objective.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "scheduler": None if scheduler is None else scheduler.state_dict(),
                             "averaged": None if averaged is None else averaged.state_dict(),
                             "epoch": epoch, "best": best, "history": history, "args": vars(args),
                             "rng": rng_state()}
                    save_checkpoint(state, os.path.join(run_dir, "last.pt"))
                    if improved:
                        save_checkpoint(state, os.path.join(run_dir, "best.pt"))
                    log.metrics(record)
                    log.info(RunLog.line(record, args.epochs))
                    if tb is not None:
                        tb.epoch(record)  # after the checkpoint; frames drawn in a background thread
        except Interrupted as e:
            done = history[-1]["epoch"] if history else 0
            raise Interrupted(f"{e}; epoch {done} is the last saved; continue with: "
                              f"python main.py --resume {run_dir}") from None
        except NonFiniteError as e:
            done = history[-1]["epoch"] if history else 0
            raise NonFiniteError(f"{e}; the run stopped, its last good checkpoint is epoch {done} "
                                 f"in {run_dir} (a smaller --lr may help)") from None
    if ddp.main and history:
        final = history[-1]
        log.info(f"done: final val acc {final.get('val_acc')}, best {best['val_acc']} "
                 f"(epoch {best['epoch']})")
        if tb is not None:
            tb.embedding(val_split.images[snap_val])
            tb.close()
        if args.plots:
            out = os.path.join(args.img_dir, os.path.basename(run_dir))
            try:
                for path in visualize.draw_run(run_dir, out):
                    log.info(f"wrote {path}")
            except Exception as e:  # the run itself is safe on disk; say so and go on
                log.info(f"pictures not drawn ({type(e).__name__}: {e}); "
                         f"retry with: python visualize.py {run_dir}")
    ddp.close()
    return run_dir


def main(argv=None):
    args, explicit = parse_args(argv)
    try:
        train(args, explicit)
    except UserError as e:
        if Dist().main:
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(3)
    except Interrupted as e:
        if Dist().main:
            print(f"interrupted: {e}", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
