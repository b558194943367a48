"""Named presets of training settings: data, not code.

A recipe is a set of flag values (by argparse dest), under "datasets" the values of one
dataset, under "objectives" the values of one loss, and under a dataset's "objectives" the
values of one loss on that dataset (`settings` merges them in that order: the more specific
wins). `--recipe NAME` fills in every flag the user did not type from the preset; flags the
user types win, and args.json records the resolved values.

    reference  the published runs' settings: the parser's defaults (100 epochs, SGD 0.01,
               ReduceLROnPlateau), decided on the test split as they were
    fast       the published accuracy in 5 (MNIST) or 10 (Fashion-MNIST) epochs: per-step
               warm-up and cosine, Nesterov, weight decay, a weight average; the per-loss values
               where the shared ones failed; published protocol (--val-size 0)
    quick      about a minute on two CPU cores: fast's schedule fitted to a budget of 1.5
               epochs (half an epoch of warm-up, lr 0.1), one evaluation at the end, bf16
               autocast where the device has native bf16 (--amp); on MNIST and Fashion-MNIST
               the strided ResNet (--model resnet-s2, half the step time) for 3 epochs of
               batch 64 at lr 0.2 (standalone 0.1; on MNIST 3.75 epochs of batch 128), and on
               MNIST the center 24x24 of the images (--center-crop) and label smoothing 0.1
               for xent and cent
    tuned      fast's schedule with the settings `sweep.py --tune` found for this loss,
               dataset and feat_dim on the held-out validation split (--recipe-file)

    python main.py --recipe fast --loss standalone --dataset fashion-mnist --feat-dim 2
"""
import json
import os

from losses import declared, hypers_of, resolve_hypers
from utils import UserError

TUNED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tuned.json")

FAST = {
    "epochs": 5,
    "lr": 0.05,
    "scheduler": "warmup-cosine",  # per step: linear warm-up, then cosine to 0
    "warmup_epochs": 1.0,
    "nesterov": True,
    "weight_decay": 5e-4,
    "wd_exempt": True,             # no decay on BatchNorm, biases, centers
    "ema_decay": 0.998,            # evaluate an exponential moving average of the weights
    "datasets": {"mnist": {"objectives": {"standalone": {"lr": 0.1}}},
                 "fashion-mnist": {"epochs": 10, "objectives": {
                     "standalone": {"lr_cent": 0.005, "batch_size": 256}}}},
    # where a loss's own defaults fail at this learning rate with 2-D features
    "objectives": {
        # 10 classes on a circle leave a cosine margin of at most 1 - cos 36 deg = 0.19
        "cosface": {"scale": 16.0, "margin": 0.1},
        "arcface": {"scale": 16.0, "margin": 0.2},
        "margin": {"margin": 10.0},
        # alpha 0.001 with weight 1 / alpha is the center loss's pull near the center
        "center-push": {"alpha": 0.001, "weight_intra": 1000.0},
    },
}

# A budget of about a minute of a laptop's CPU: 1.5 epochs of 60,000 images are ~700 steps
# of 128; the strided ResNet's 3 epochs on MNIST and Fashion-MNIST ~2800 steps of 64.
QUICK = {
    "epochs": 1.5,                 # the last epoch runs half its steps
    "lr": 0.1,
    "scheduler": "warmup-cosine",
    # half an epoch: a whole one would be most of the budget, and a fifth let cent and
    # standalone diverge on some seeds at lr 0.1 (bench/README.md)
    "warmup_epochs": 0.5,
    "nesterov": True,
    "weight_decay": 5e-4,
    "wd_exempt": True,
    # the average's decay warms up as (1 + n) / (10 + n), which reaches 0.99 after ~890
    # updates: over 700-2800 steps it averages about the last 80-100, where the cosine has cooled
    "ema_decay": 0.99,
    "batch_size": 128,
    "eval_every": 1000,            # evaluate once, after the last epoch
    "amp": "auto",                 # bf16 where it is native (engine.resolve_auto), else fp32
    "datasets": {
        # chosen on the validation split (bench/README.md's probes): the strided ResNet's 3
        # epochs beat the ResNet's 1.5 (MNIST) or 2 (Fashion-MNIST) in the same minute; batch
        # 64 at lr 0.2 (standalone 0.1) did as well as batch 128's 3.5 epochs (where standalone
        # diverged at 0.2), and xent fell back at 0.3
        # on MNIST's validation split (bench/README.md), label smoothing 0.1 raised xent by
        # 0.20-0.38 points and cent by 0.03-0.21; standalone's 3.5 epochs of batch 128 at lr
        # 0.1 beat its 3 of 64 by 0.09-0.20 in less time, and 3.75 the 3.5 by 0.07-0.09
        # MNIST's digits are drawn in a 20x20 box centred in 28x28: the center 24x24 holds
        # all the ink of 88 % of the training images and 99.7 % of all ink, the step runs
        # 1.19x faster in bf16, and the validation accuracy stayed (bench/README.md)
        "mnist": {"model": "resnet-s2", "center_crop": 24, "epochs": 3, "batch_size": 64, "lr": 0.2,
                  "objectives": {"standalone": {"lr": 0.1, "batch_size": 128, "epochs": 3.75},
                                 "xent": {"label_smoothing": 0.1},
                                 "cent": {"label_smoothing": 0.1}}},
        "fashion-mnist": {"model": "resnet-s2", "epochs": 3, "batch_size": 64, "lr": 0.2,
                          "objectives": {"standalone": {"lr": 0.1, "lr_cent": 0.005}}}},
    "objectives": FAST["objectives"],
}

RECIPES = {
    "reference": {},
    "fast": FAST,
    "quick": QUICK,
    "tuned": {k: v for k, v in FAST.items() if k not in ("datasets", "objectives")},
}

# The held-out validation split of --recipe tuned and the tuner: a sixth of the 60,000-image
# training splits, a tenth of CIFAR's 50,000.
VAL_SIZES = {"cifar10": 5000, "cifar100": 5000}


def val_size(dataset):
    if dataset.startswith("folder:"):
        raise UserError("a folder: dataset has no default validation size: pass --val-size N")
    return VAL_SIZES.get(dataset, 10000)


def read_tuned(path):
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a readable tuned-recipe file: {e}") from None
    # {dataset: {feat_dim: {loss: {"settings": {...}, "source": {...}}}}}, as write_tuned makes it
    entries = [e for by_dim in (data.values() if isinstance(data, dict) else [None])
               for by_loss in (by_dim.values() if isinstance(by_dim, dict) else [None])
               for e in (by_loss.values() if isinstance(by_loss, dict) else [None])]
    if not all(isinstance(e, dict) and isinstance(e.get("settings"), dict)
               and isinstance(e.get("source"), dict) for e in entries):
        raise UserError(f"{path} is not a tuned-recipe file of sweep.py --tune (expected "
                        "{dataset: {feat_dim: {loss: {settings, source}}}})")
    return data


def tuned_entry(path, loss, dataset, feat_dim):
    """{"settings": ..., "source": ...} of one tuned (loss, dataset, feat_dim), or a UserError
    that says how to make it."""
    entry = read_tuned(path).get(dataset, {}).get(str(feat_dim), {}).get(loss)
    if entry is None:
        raise UserError(f"no tuned recipe for {loss} on {dataset} at feat_dim {feat_dim} in "
                        f"{path}: make it with python sweep.py --tune --loss {loss} --dataset "
                        f"{dataset} --feat-dim {feat_dim} -- --data-dir DIR")
    return entry


def write_tuned(path, loss, dataset, feat_dim, settings, source):
    """Add (or replace) one tuned entry in the file, atomically; tuners that finish at once
    each keep their entry."""
    import rundir  # the one writer of files
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with rundir.folder_locked(path):
        data = read_tuned(path)
        data.setdefault(dataset, {}).setdefault(str(feat_dim), {})[loss] = {
            "settings": settings, "source": source}
        rundir.atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def settings(recipe, loss, dataset=None, feat_dim=None, recipe_file=TUNED_FILE):
    """The flag values of a recipe for one loss and dataset: the shared ones, the dataset's,
    the loss's, then the loss's on that dataset; for `tuned`, the tuned entry's on top."""
    def own(values):
        return {k: v for k, v in values.items() if k not in ("datasets", "objectives")}
    preset = RECIPES[recipe]
    on_dataset = preset.get("datasets", {}).get(dataset, {})
    out = {**own(preset), **own(on_dataset), **preset.get("objectives", {}).get(loss, {}),
           **on_dataset.get("objectives", {}).get(loss, {})}
    if recipe == "tuned":
        entry = tuned_entry(recipe_file, loss, dataset, feat_dim)
        out.update(entry["settings"], val_size=entry["source"].get("val_size", val_size(dataset)),
                   epochs=entry["source"].get("epochs", out["epochs"]))
    return out


def apply_recipe(args, explicit):
    """Fill in the flags of args.recipe that the user did not type (names in `explicit`).
    An objective's hyperparameter is set only where the chosen loss uses it (label smoothing
    for xent and cent with the cross-entropy head), so args.json shows what was used.
    `tuned` also records where its settings came from (args.recipe_source). Returns args,
    changed in place."""
    own = {h.name: h for h in hypers_of(args.loss)}
    values = resolve_hypers(args.loss, vars(args))  # the loss's own, defaults filled in
    found = settings(args.recipe, args.loss, args.dataset, args.feat_dim, args.recipe_file)
    for key, value in found.items():
        if key in explicit:
            continue
        if key in declared() and (key not in own or not own[key].applies(values)):
            continue
        setattr(args, key, value)
    if args.recipe == "tuned":
        if not args.val_size:
            raise UserError("--recipe tuned holds out a validation split: --val-size must be positive")
        entry = tuned_entry(args.recipe_file, args.loss, args.dataset, args.feat_dim)
        args.recipe_source = {"file": os.path.relpath(args.recipe_file), **entry["source"],
                              "searched": sorted(entry["settings"])}
    return args
