"""main.py's command line: the parser (argparse groups), the recipe applied, every check of
the values, and which flags may change on --resume.

    python main.py --help      # the flag reference: every flag, its help and its default
"""
import argparse
import math
import os

import datasets
import recipes
from losses import OBJECTIVES, declared, flag_help, hyper_problems, is_objective, resolve_hypers
from models import MODELS
from optim import OPTIMIZERS, SCHEDULERS
from utils import OneLineParser, UserError

# Flags that may differ from the checkpoint's on --resume: they do not change what is computed
# (or, for --epochs and --steps, only how far the run goes).
RESUMABLE_FLAGS = {"resume", "epochs", "steps", "device", "data_dir", "download", "progress",
                   "plots", "img_dir", "log_interval", "log_dir", "tensorboard", "test", "recipe_file"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default once: not where the help text already says it."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    p = OneLineParser(description="Train a feature-learning objective (--loss) and watch the "
                      "feature space form.", formatter_class=HelpFormatter)
    p.add_argument("--recipe", default="reference", choices=list(recipes.RECIPES),
                   help="preset of training settings (recipes.py); flags you type override it")
    p.add_argument("--recipe-file", "--recipe_file", default=os.path.relpath(recipes.TUNED_FILE),
                   help="--recipe tuned: the file of tuned settings that sweep.py --tune writes")
    g = p.add_argument_group("objective")
    g.add_argument("--loss", default="standalone", metavar="LOSS", type=loss_name,
                   help=f"the objective: {', '.join(OBJECTIVES)}, or pml:NAME for any loss of "
                   "pytorch-metric-learning")
    # Each objective's hyperparameters, as the registry declares them. Not given, a flag is
    # absent here and check_args fills in the chosen loss's own default.
    for name, decls in declared().items():
        h = decls[0][1]
        extra = {"nargs": h.nargs} if getattr(h, "nargs", None) else {}
        g.add_argument(*h.flags, dest=name, type=h.type, choices=h.choices,
                       default=argparse.SUPPRESS, help=flag_help(decls), **extra)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="mnist", type=dataset_name, metavar="DATASET",
                   help=f"{', '.join(datasets.DATASETS)}, or folder:PATH (your images in "
                   "ImageFolder layout: PATH/train/<class>/*, PATH/test/<class>/*)")
    g.add_argument("--data-dir", "--data_dir", default="./data",
                   help="where the torchvision datasets are (or are downloaded to)")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download the dataset when it is not in --data-dir")
    g.add_argument("--subset", type=int, default=None,
                   help="use at most N training and N test samples (a fixed choice)")
    g.add_argument("--val-size", "--val_size", type=int, default=0,
                   help="hold out N training images (fixed, stratified, the same for every seed "
                   "and loss) as the validation split that every choice reads; 0: the published "
                   "protocol, train on all and evaluate the test split every epoch")
    g.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                   help="with --val-size: measure the official test split once, after the last "
                   "epoch (--no-test: never open it)")
    g.add_argument("--held-out-classes", "--held_out_classes", default=None, metavar="LIST",
                   help="open-set: train without these classes ('5,6,7,8,9' or 'half') and "
                   "evaluate retrieval among their test images (unseen_*)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="augment the training batches (the dataset's own: a small rotation on "
                   "the digits, flips and shifts on the photos; --no-augment: the images as they are)")
    g.add_argument("--image-size", "--image_size", type=int, default=None,
                   help="folder: datasets: resize every image to SxS")
    g.add_argument("--center-crop", "--center_crop", type=int, default=None, metavar="S",
                   help="train and evaluate on the center SxS of every image (default: the "
                   "whole image; --recipe quick: 24 on MNIST, whose digits are drawn in a "
                   "20x20 box)")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="folder: datasets: 1 (grey) or 3 (RGB) (default: from the images)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet", choices=list(MODELS),
                   help="resnet: the reference runs' small pre-activation ResNet; resnet-s2: "
                   "its layers on a stride-2 stem (a quarter of the map, half the step time; "
                   "--recipe quick's on (Fashion-)MNIST); resnet-s2-slim: resnet-s2 with a "
                   "64-channel last stage (0.83-0.88x its step, a little less accurate); "
                   "lenet: LeNet++ (no BatchNorm: train it with --lr 0.001)")
    g.add_argument("--feat-dim", "--feat_dim", type=int, default=2,
                   help="size of the learned features (2: drawn as they are)")
    g.add_argument("--sync-bn", "--sync_bn", action="store_true",
                   help="torchrun on CUDA: SyncBatchNorm across ranks")
    g = p.add_argument_group("optimizer")
    g.add_argument("--epochs", "--max-epoch", "--max_epoch", dest="epochs", type=epochs_value,
                   default=100, help="epochs to train; a fraction (1.5) ends with a partial "
                   "epoch of the remaining steps")
    g.add_argument("--steps", type=int, default=None,
                   help="optimizer steps to train in all, instead of --epochs (which args.json "
                   "then records as steps / steps per epoch)")
    g.add_argument("--batch-size", "--batch_size", type=int, default=128,
                   help="the global batch (split across ranks under torchrun)")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="sgd (the reference) or adamw (--momentum and --nesterov unused)")
    g.add_argument("--lr", type=float, default=0.01, help="learning rate of the net")
    g.add_argument("--lr-cent", "--lr_cent", type=float, default=None,
                   help="learning rate of the centers, or of a proxy loss's proxies "
                   "(default: --lr)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False,
                   help="Nesterov momentum")
    g.add_argument("--weight-decay", "--weight_decay", type=float, default=0.0,
                   help="L2 weight decay")
    g.add_argument("--wd-exempt", "--wd_exempt", action=argparse.BooleanOptionalAction,
                   default=False, help="no weight decay on BatchNorm, biases and centers")
    g.add_argument("--ema-decay", "--ema_decay", type=float, default=None,
                   help="evaluate (and checkpoint) an exponential moving average of the weights "
                   "and BatchNorm buffers with this decay, e.g. 0.998 (default: off)")
    g.add_argument("--scheduler", default="plateau", choices=SCHEDULERS,
                   help="plateau: the reference ReduceLROnPlateau on the deciding accuracy "
                   "(factor 0.2, patience 10, rel. threshold 0.1); step: x gamma every "
                   "--step-size epochs; warmup-cosine: per step, linear warm-up over "
                   "--warmup-epochs, then cosine to 0")
    g.add_argument("--warmup-epochs", "--warmup_epochs", type=float, default=1.0,
                   help="warmup-cosine: length of the linear warm-up, in epochs")
    g.add_argument("--step-size", "--step_size", "--stepsize", dest="step_size", type=int,
                   default=20, help="step scheduler: epochs between decays")
    g.add_argument("--gamma", type=float, default=0.5, help="step scheduler: decay factor")
    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps, cpu")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for the model; the objective stays fp32 (default: the "
                   "recipe's choice: off, except --recipe quick, which turns it on where bf16 is "
                   "native: CUDA, CPUs with AVX512-BF16 or AMX; args.json records the outcome)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step")
    g.add_argument("--deterministic", action="store_true",
                   help="CUDA: deterministic kernels and no cuDNN autotuning, so that a seed "
                   "repeats a run and a resume continues it bit for bit, at some speed (CPU "
                   "runs repeat without it); an op with no deterministic kernel warns")
    g.add_argument("--channels-last", "--channels_last", action=argparse.BooleanOptionalAction,
                   default=None, help="channels_last memory format for images and convolutions "
                   "(default: on CPU, and on CUDA with --amp)")
    g = p.add_argument_group("run")
    g.add_argument("--log-dir", "--log_dir", default="log", help="run directories go here")
    g.add_argument("--img-dir", "--img_dir", default="imgs", help="pictures go to IMG_DIR/<run>/")
    g.add_argument("--name", default=None, help="suffix of the run directory's name")
    g.add_argument("--seed", type=int, default=0, help="seeds the weights, the order and the "
                   "augmentation (not the validation split, which is fixed)")
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


def loss_name(name):
    if not is_objective(name):
        raise argparse.ArgumentTypeError(f"unknown loss {name!r}; choose from "
                                         f"{', '.join(OBJECTIVES)}, or pml:NAME")
    return name


def epochs_value(text):
    """--epochs: a whole number (5, kept an int as older args.json files hold it) or a
    fraction (1.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid epochs value: {text!r} (a number of epochs: "
                                         "5, or 1.5)") from None
    return int(value) if value.is_integer() else value


def dataset_name(name):
    name = datasets.canonical_name(name)
    if name == "folder:":
        raise argparse.ArgumentTypeError("folder: needs a path, e.g. folder:./my-images")
    if name not in datasets.DATASETS and not name.startswith("folder:"):
        raise argparse.ArgumentTypeError(f"unknown dataset {name!r}; choose from "
                                         f"{', '.join(datasets.DATASETS)}, or folder:PATH")
    return name


def typed_flags(argv=None):
    """The dests of the flags in argv, as argparse reads them (--loss=x, abbreviations)."""
    unset = object()
    probe = build_parser()
    probe.set_defaults(**{a.dest: unset for a in probe._actions if a.dest != "help"})
    return {k for k, v in vars(probe.parse_args(argv)).items() if v is not unset}


def parse_args(argv=None):
    """The parsed flags and the set of flags the user actually typed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = typed_flags(argv)
    try:
        recipes.apply_recipe(args, explicit)
    except UserError as e:
        parser.error(str(e))
    # a tuned-recipe file is data a person may edit: a key that is no flag is a mistake there
    unknown = sorted(set(vars(args)) - {a.dest for a in parser._actions} - {"recipe_source"})
    if unknown:
        parser.error(f"--recipe {args.recipe} sets {', '.join(map(repr, unknown))}, which "
                     f"main.py has no flag for (check {args.recipe_file})")
    if args.amp is None:  # neither typed nor the recipe's ("auto": engine.resolve_auto decides)
        args.amp = False
    if {"epochs", "steps"} <= explicit:
        parser.error("--epochs and --steps both set the length of the run: pass one")
    check_args(args, parser)
    return args, explicit


POSITIVE = ("feat_dim", "epochs", "steps", "batch_size", "subset", "eval_every", "log_interval",
            "step_size", "snapshot_size", "image_size", "center_crop", "lr", "lr_cent", "gamma")
NOT_NEGATIVE = ("weight_decay", "momentum", "warmup_epochs", "val_size")


PATHS = ("data_dir", "log_dir", "img_dir", "recipe_file", "resume")
SEED_MAX = 2**32 - 1  # numpy's seed range


def check_types(args, parser):
    """Each value of the type and among the choices its flag parses to. What argparse parsed
    passes; this is for what a recipe file or a saved args.json put there."""
    for action in build_parser()._actions:
        value = getattr(args, action.dest, None)
        # --recipe: applied when the run began; a saved run may name one renamed since
        if value is None or action.dest in ("help", "recipe") or action.nargs is not None:
            continue
        flag = action.option_strings[0]
        if action.type in (int, float, epochs_value):
            whole = action.type is int
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                parser.error(f"{flag} must be {'a whole number' if whole else 'a number'}, "
                             f"got {value!r}")
        elif action.type in (loss_name, dataset_name):
            try:
                action.type(value if isinstance(value, str) else repr(value))
            except argparse.ArgumentTypeError as e:
                parser.error(f"argument {flag}: {e}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"{flag} must be one of {', '.join(map(str, action.choices))}, got {value!r}")


def check_saved(args, run_dir):
    """On --resume, the settings the run directory saved (args.json or the checkpoint's)
    merged with the flags typed, checked as typed flags are: a damaged or hand-edited file is
    one line before any work, not a traceback in the middle of the run."""
    class Refusal:
        @staticmethod
        def error(message):
            raise UserError(f"cannot resume {run_dir}: its saved settings do not pass the "
                            f"checks of main.py ({message})")
    check_args(args, Refusal)
    return args


def check_args(args, parser):
    check_types(args, parser)
    for flag, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
        if isinstance(value, str) and "\0" in value:  # the OS refuses such a path with a traceback
            parser.error(f"--{flag.replace('_', '-')} contains a NUL character")
    for flag in PATHS:
        if getattr(args, flag) == "":
            parser.error(f"--{flag.replace('_', '-')} must not be empty")
    if not 0 <= args.seed <= SEED_MAX:
        parser.error(f"--seed must be from 0 to {SEED_MAX}, got {args.seed}")
    if not args.momentum < 1:  # at 1 or above, each step adds all past steps again: divergence
        parser.error(f"--momentum must be below 1, got {args.momentum}")
    if args.held_out_classes is not None and not args.held_out_classes.strip(" ,"):
        parser.error("--held-out-classes names no class: give indices like 5,6,7 or 5-9, or half")
    if not datasets.is_folder(args.dataset):
        for flag in ("image_size", "channels"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} applies to folder: datasets only; "
                             f"{args.dataset} has its own")
    if not args.test and not args.val_size:
        parser.error("--no-test needs --val-size N: without a validation split the test split "
                     "is what every epoch evaluates")
    for flag in POSITIVE:
        value = getattr(args, flag)
        if value is not None and not value > 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    for flag in NOT_NEGATIVE:
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative, got {getattr(args, flag)}")
    vars(args).update(resolve_hypers(args.loss, vars(args)))
    for problem in hyper_problems(args.loss, vars(args)):
        parser.error(problem)
    if args.ema_decay is not None and not 0 <= args.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1) (0: off), got {args.ema_decay}")
