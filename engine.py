"""The training engine: Net (feature extractor + objective), the data of a run (train,
validation, test and open-set splits), the training epoch with its non-finite check and stop
handling, feature extraction and the evaluation of whole splits. main.py, bench/ and the
tests import it; it imports no script.
"""
import itertools
import signal
from types import SimpleNamespace

import torch
from torch import nn
from tqdm import tqdm

import datasets
import rundir
from losses import build_objective, center_statistics, class_means, declared, nearest_center
from losses import geometry, retrieval_metrics
from models import build_model
from optim import build_optimizer, learning_rates
from utils import UserError


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


def native_bf16(device):
    """(True or False, why): does the device compute bf16 natively, so that autocast to it is
    faster and loses nothing the fp32 objective needs? CUDA from Ampere (compute capability
    8) on; x86 CPUs with the AVX512-BF16 or AMX instructions (oneDNN's bf16 convolutions run
    on them: 1.5x on a 2-core EPYC, bench/variants.py). Elsewhere bf16 is emulated or slower."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if device.type != "cpu":
        return False, f"{device.type}: not measured"
    capability = torch.backends.cpu.get_cpu_capability()  # DEFAULT, AVX2, AVX512, SVE256, ...
    found = [name for name, probe in (("AVX512-BF16", "_is_avx512_bf16_supported"),
                                      ("AMX", "_is_amx_tile_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    if capability.startswith("AVX512") and found:
        return True, f"CPU {capability} with {' and '.join(found)}"
    return False, f"CPU {capability} without native bf16"


def resolve_auto(args, device):
    """Fill in the flags whose default depends on the device. --amp "auto" (--recipe quick)
    is on where native_bf16 says so, its reason kept in args.amp_auto for args.json (None,
    left by neither the user nor the recipe: off). bench/ measured, on a 2-core CPU:
    channels_last 1.2x faster training steps and evaluation (fp32)."""
    if args.amp == "auto":
        args.amp, args.amp_auto = native_bf16(device)
    elif args.amp is None:
        args.amp = False
    if args.channels_last is None:
        args.channels_last = device.type == "cpu" or args.amp
    return args


def eval_batch_size(args, device):
    """Evaluation batch: large on CUDA; on CPU the training batch, which bench/ measured
    1.6-3.3x faster than batches of 1024 (those fall out of the caches)."""
    return 1024 if device.type == "cuda" else args.batch_size


def memory_format_of(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


def build_net(args, num_classes, channels, image_size, device):
    """The feature extractor and objective of the flags as one Net on the device, and the
    optimizer over both. A pair loss whose batch would not fit in memory stops here."""
    model = build_model(args.model, args.feat_dim, channels, image_size)
    # the loss's own hyperparameters; a run older than one of them gets its default
    try:
        objective = build_objective(args.loss, num_classes, args.feat_dim,
                                    **{name: getattr(args, name, None) for name in declared()})
    except ValueError as e:  # a name the registry does not know (--pml-miner): it lists them
        raise UserError(str(e)) from None
    if hasattr(objective, "check_batch"):  # the global batch: pair losses see every rank's
        objective.check_batch(args.batch_size, device)
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
    """Ctrl-C / SIGTERM: finish the current step, then stop. A second signal stops at once.
    enabled=False (a caller that is not the program itself, such as a test) leaves the
    process's handlers alone, so SIGTERM still ends it."""

    def __init__(self, enabled=True):
        self.signal, self.enabled, self.previous = None, enabled, {}

    def __enter__(self):
        if self.enabled:
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
                    scheduler=None, averaged=None, tb=None, steps=None, clock=None):
    """One pass over the training split, or its first `steps` batches (a partial last epoch:
    the same batches a whole epoch would start with). Everything is accumulated on the
    device and read every --log-interval steps (progress, non-finite check) and once at the
    end. After every step: the per-step `scheduler` (if any) and the weight average
    `averaged` (if any). clock (utils.Clock): the process's first step gets a lap of its own.
    Returns the epoch's mean loss terms, train accuracy, and the features computed during
    the epoch (`features`, with `seen` marking the samples the epoch used). With a per-step
    scheduler also `lr_steps`: [epochs done, the net's lr] before the first step, every
    --log-interval steps and after the last, the schedule as it ran within the epoch."""
    net.train()
    device = train.labels.device
    n, per_epoch = len(train), len(train) // args.batch_size
    steps = per_epoch if steps is None else min(steps, per_epoch)
    features = torch.zeros(n, args.feat_dim, device=device)
    seen = torch.zeros(n, dtype=torch.int32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    params = [p for p in net.parameters()]
    names, term_log, checked = None, None, 0
    lr_steps = [[epoch - 1, learning_rates(optimizer)["lr"]]] if scheduler is not None else None
    batches = datasets.train_batches(train, args.batch_size, args.seed, epoch, spec, ddp.rank,
                                     ddp.world_size, memory_format_of(args))
    progress = tqdm(itertools.islice(batches, steps), total=steps, leave=False,
                    desc=f"epoch {epoch}/{rundir.epochs_text(args.epochs)}", disable=not bar,
                    dynamic_ncols=True)
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
            if step == 0 and clock is not None and "first step" not in clock.seconds:
                clock.lap("first step", device)
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
                tb.step_terms(recent, (epoch - 1) * per_epoch + step + 1)
            if lr_steps is not None:
                lr_steps.append([epoch - 1 + (step + 1) / per_epoch, learning_rates(optimizer)["lr"]])
        if stop is not None and stop.signal is not None:
            raise Interrupted(f"stopped by signal {stop.signal} at epoch {epoch}, step {step + 1}")
    progress.close()
    means = ddp.sum(term_log.mean(0)) / ddp.world_size
    stats = {f"train_{k}": v for k, v in zip(names, means.tolist())}
    stats["train_acc"] = ddp.sum(correct).item() / (steps * args.batch_size)
    if lr_steps is not None:
        stats["lr_steps"] = lr_steps
    ddp.sum(features)
    ddp.sum(seen)
    return stats, features, seen.bool()


# ----------------------------------------------------------------------------- the data

def load_data(args, device):
    """The splits of a run, uint8 on the device:
    train   what it trains on: the official training split, less `val` and the held-out classes;
    val     --val-size images held out of it (fixed, stratified), or None;
    test    the official test split (its seen classes), or None with --no-test;
    unseen  with --held-out-classes, the test images of those classes (retrieval only);
    clean   a fixed subset of `train`, the size of the deciding split, measured unaugmented
            with the evaluated weights: a train-test gap of like with like."""
    def load(train):
        split = datasets.load_split(args.dataset, args.data_dir, train, device, args.subset,
                                    args.download, image_size=args.image_size,
                                    channels=args.channels)
        return datasets.center_crop(split, args.center_crop, args.dataset)
    train = load(True)
    test = load(False) if args.test or not args.val_size else None
    unseen = None
    if args.held_out_classes:
        held = datasets.held_out_classes(args.held_out_classes, len(train.classes))
        train, _ = datasets.split_classes(train, held)
        if test is not None:
            test, unseen = datasets.split_classes(test, held)
    train, val = datasets.split_validation(train, args.val_size)
    if len(train) < args.batch_size:
        raise UserError(f"the training split has {len(train)} samples, fewer than one "
                        f"batch of {args.batch_size}")
    size = min(len(train), len(val if val is not None else test))
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:size].sort().values
    clean = datasets.Split(train.images[keep.to(device)], train.labels[keep.to(device)], train.classes)
    return SimpleNamespace(train=train, val=val, test=test, unseen=unseen, clean=clean,
                           spec=(datasets.augmentation(args.dataset, train.images.shape[-1])
                                 if args.augment else {}),
                           classes=train.classes)


# ----------------------------------------------------------------------------- evaluation

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
def centers_of(objective, features, labels, num_classes):
    """The objective's centers, or where it has none the class means of `features`."""
    centers = objective.centers
    return class_means(features, labels, num_classes) if centers is None else centers.detach()


@torch.inference_mode()
def measure(objective, features, labels, centers, prefix, geometry_too=True, distances=False):
    """{prefix_acc, prefix_nc_acc, prefix_<retrieval>, prefix_<geometry>} of one split;
    distances: also the per-class distances to the centers and between them (the pictures)."""
    stats = {f"{prefix}_acc": (objective.predict(features) == labels).double().mean().item(),
             f"{prefix}_nc_acc": (nearest_center(features, centers) == labels).double().mean().item()}
    found = dict(retrieval_metrics(features, labels))
    if geometry_too:
        found.update(geometry.geometry_metrics(features, labels, centers))
    if distances:
        found.update(center_statistics(features, labels, centers))
    stats.update({f"{prefix}_{k}": v for k, v in found.items()})
    return stats


def evaluate(evaluated, data, args, ddp, device, final, train_features, train_labels, epoch=None):
    """Every measurement of one evaluation with the evaluated weights: the clean training
    subset (train_eval_*), the deciding split each time, the test split (and the unseen
    classes) each time under the published protocol or once after the last epoch. Returns
    the stats, the centers (the objective's, or the clean class means) and the features the
    snapshot keeps. Non-finite features (finite weights can still overflow, or the
    BatchNorm statistics go bad) are a diverged run: NonFiniteError."""
    def features(split):
        found = extract_features(evaluated.model, split, ddp, args.feat_dim, eval_batch_size(args, device),
                                 memory_format_of(args), evaluated.amp_dtype)
        if not torch.isfinite(found).all():
            raise NonFiniteError(f"the evaluated weights give non-finite features at epoch {epoch}")
        return found
    objective, (deciding, tested) = evaluated.objective, rundir.split_names(args)
    clean = features(data.clean)
    objective.observe(clean, data.clean.labels)
    centers = centers_of(objective, clean, data.clean.labels, len(data.classes))
    with torch.inference_mode():
        stats = {"train_nc_acc": (nearest_center(train_features, centers) == train_labels)
                 .double().mean().item()}
    stats.update(measure(objective, clean, data.clean.labels, centers, "train_eval"))
    split = data.val if data.val is not None else data.test
    kept = {"val_features": features(split), "val_labels": split.labels}
    stats.update(measure(objective, kept["val_features"], split.labels, centers, deciding,
                         distances=True))
    if data.test is not None and (final or data.val is None):
        if data.val is not None:
            stats.update(measure(objective, features(data.test), data.test.labels, centers, tested))
        if data.unseen is not None:
            unseen = features(data.unseen)
            kept.update(unseen_features=unseen, unseen_labels=data.unseen.labels)
            stats.update({f"unseen_{k}": v for k, v in
                          retrieval_metrics(unseen, data.unseen.labels).items()})
    return stats, centers, kept
