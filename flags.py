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
# (or, for --epochs, only how far the run goes).
RESUMABLE_FLAGS = {"resume", "epochs", "device", "data_dir", "download", "progress", "plots",
                   "img_dir", "log_interval", "log_dir", "tensorboard", "test", "recipe_file"}


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
    g.add_argument("--image-size", "--image_size", type=int, default=None,
                   help="folder: datasets: resize every image to SxS")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="folder: datasets: 1 (grey) or 3 (RGB) (default: from the images)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet", choices=list(MODELS),
                   help="resnet: the reference runs' small pre-activation ResNet; lenet: LeNet++ "
                   "(no BatchNorm: train it with --lr 0.001)")
    g.add_argument("--feat-dim", "--feat_dim", type=int, default=2,
                   help="size of the learned features (2: drawn as they are)")
    g.add_argument("--sync-bn", "--sync_bn", action="store_true",
                   help="torchrun on CUDA: SyncBatchNorm across ranks")
    g = p.add_argument_group("optimizer")
    g.add_argument("--epochs", "--max-epoch", "--max_epoch", dest="epochs", type=int, default=100,
                   help="epochs to train")
    g.add_argument("--batch-size", "--batch_size", type=int, default=128,
                   help="the global batch (split across ranks under torchrun)")
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="sgd (the reference) or adamw (--momentum and --nesterov unused)")
    g.add_argument("--lr", type=float, default=0.01, help="learning rate of the net")
    g.add_argument("--lr-cent", "--lr_cent", type=float, default=None,
                   help="learning rate of the centers (default: --lr)")
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
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the model")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step")
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


def dataset_name(name):
    name = datasets.canonical_name(name)
    if name not in datasets.DATASETS and not name.startswith("folder:"):
        raise argparse.ArgumentTypeError(f"unknown dataset {name!r}; choose from "
                                         f"{', '.join(datasets.DATASETS)}, or folder:PATH")
    return name


def parse_args(argv=None):
    """The parsed flags and the set of flags the user actually typed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unset = object()
    probe = build_parser()
    probe.set_defaults(**{a.dest: unset for a in probe._actions if a.dest != "help"})
    explicit = {k for k, v in vars(probe.parse_args(argv)).items() if v is not unset}
    try:
        recipes.apply_recipe(args, explicit)
    except UserError as e:
        parser.error(str(e))
    check_args(args, parser)
    return args, explicit


POSITIVE = ("feat_dim", "epochs", "batch_size", "subset", "eval_every", "log_interval",
            "step_size", "snapshot_size", "image_size", "lr", "lr_cent", "gamma")
NOT_NEGATIVE = ("weight_decay", "momentum", "warmup_epochs", "val_size")


def check_args(args, parser):
    for flag, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
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
