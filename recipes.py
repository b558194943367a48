"""Named presets of training settings: data, not code.

A recipe is a set of flag values (by argparse dest), under "datasets" the values of one
dataset, under "objectives" the values of one loss, and under a dataset's "objectives" the
values of one loss on that dataset (`settings` merges them in that order: the more specific
wins). `--recipe NAME` fills in every flag the user did
not type from the preset; flags the user types win, and args.json records the
resolved values. `reference` is the published runs' settings, i.e. the parser's defaults.

    python main.py --recipe fast --loss standalone --dataset fashion-mnist --feat-dim 2
"""
from losses import declared, hypers_of, resolve_hypers

RECIPES = {
    # 100 epochs, SGD lr 0.01 momentum 0.9, ReduceLROnPlateau on val accuracy: the defaults.
    "reference": {},
    # At most 10 epochs to the published accuracy (README: "Reproducing the published table"
    # gives what each setting bought, measured).
    "fast": {
        "epochs": 5,
        "lr": 0.05,
        "scheduler": "warmup-cosine",  # per step: linear warm-up, then cosine to 0
        "warmup_epochs": 1.0,
        "nesterov": True,
        "weight_decay": 5e-4,
        "wd_exempt": True,             # no decay on BatchNorm, biases, centers
        "ema_decay": 0.998,            # evaluate an exponential moving average of the weights
        # Per dataset and loss, where the shared values fell short (README: "Results").
        # MNIST: standalone at 2-D gains from a larger lr: after 5 epochs, seeds 0 to 4, lr
        # 0.05 reached 0.9938, 0.9932, 0.9916, 0.9929, 0.9924 and lr 0.1 0.9939, 0.9935,
        # 0.9935, 0.9933, 0.9926; lr 0.15 reached 0.9923 (seed 2) and lr 0.2 went to inf in
        # its first epoch. Slower centers (lr_cent 0.005) changed nothing there (0.9934
        # against 0.9938, seed 0, lr 0.05).
        # Fashion-MNIST (2-D, seed 0 unless said): xent 0.9004 after 5 epochs, 0.9208 after
        # 10 (published, 100 epochs: 0.913). standalone there needs slower centers: after 5
        # epochs at lr 0.02, lr_cent 0.2 / 0.02 (= lr) / 0.005 / 0.001 reached 0.8247 /
        # 0.8943 / 0.9010 / 0.8871; at lr 0.05, lr_cent 0.05 / 0.005 reached 0.8827 / 0.9033.
        # It also needs larger batches (more pairs of classes in each push): seed 1, 5
        # epochs, batch 64 / 128 / 256 / 512 reached 0.8851 (seed 0, lr 0.02) / 0.8755 /
        # 0.8904 / 0.8642; after 10 epochs batch 256 reached 0.9184, 0.9058, 0.9078 (seeds 0,
        # 1, 2) against 0.9158, 0.8910, 0.9048, and batch 384 0.9059 (seed 1).
        "datasets": {"mnist": {"objectives": {"standalone": {"lr": 0.1}}},
                     "fashion-mnist": {"epochs": 10, "objectives": {
                         "standalone": {"lr_cent": 0.005, "batch_size": 256}}}},
        # Label smoothing 0.1 was tried for xent and cent and dropped: on xent, MNIST, 2-D,
        # 10,000 images, 3 epochs it cost 2.5 points (0.8935 with, 0.9190 without); on xent,
        # Fashion-MNIST, 2-D, 10 epochs 0.92 (0.9116 with, 0.9208 without). Nesterov bought
        # nothing measurable there (0.9209 without); every committed run used it, so it stays.
        # Per objective, where the default failed at this learning rate (README: "Every
        # objective"; MNIST, 2-D, 5,000 images, 2 epochs):
        "objectives": {
            # the papers' s = 64 with m = 0.35 / 0.5 reached 0.22 / 0.18 (10 classes on a
            # circle leave a cosine margin of at most 1 - cos 36 = 0.19, an angle of 18 deg)
            "cosface": {"scale": 16.0, "margin": 0.1},   # 0.475
            "arcface": {"scale": 16.0, "margin": 0.2},   # 0.576
            "margin": {"margin": 10.0},                  # 0.747; margin 100 went NaN
            # exp(alpha d^2) pulls alpha times as hard as d^2 near the center: the defaults
            # reached 0.116; weight_intra 10 reached 0.706 here but went NaN on full MNIST
            # (exp overflows); alpha 0.001 with weight 1 / alpha is the center loss's pull
            # near the center and grows slowly far from it
            "center-push": {"alpha": 0.001, "weight_intra": 1000.0},  # 0.838
        },
    },
}


def settings(recipe, loss, dataset=None):
    """The flag values of a recipe for one loss and dataset: the shared ones, the dataset's,
    the loss's, then the loss's on that dataset."""
    def own(values):
        return {k: v for k, v in values.items() if k not in ("datasets", "objectives")}
    preset = RECIPES[recipe]
    on_dataset = preset.get("datasets", {}).get(dataset, {})
    return {**own(preset), **own(on_dataset), **preset.get("objectives", {}).get(loss, {}),
            **on_dataset.get("objectives", {}).get(loss, {})}


def apply_recipe(args, explicit):
    """Fill in the flags of args.recipe that the user did not type (names in `explicit`).
    An objective's hyperparameter is set only where the chosen loss uses it (label smoothing
    for xent and cent with the cross-entropy head), so args.json shows what was used.
    Returns args, changed in place."""
    own = {h.name: h for h in hypers_of(args.loss)}
    values = resolve_hypers(args.loss, vars(args))  # the loss's own, defaults filled in
    for key, value in settings(args.recipe, args.loss, args.dataset).items():
        if key in explicit:
            continue
        if key in declared() and (key not in own or not own[key].applies(values)):
            continue
        setattr(args, key, value)
    return args
