"""pytorch-metric-learning's losses as objectives: `--loss pml:NAME` for any of its loss
classes (constructor arguments from --pml-args key=value ..., a miner from --pml-miner),
and the short names of a curated few (contrastive, triplet, ...; see losses/__init__.py).

The package is an optional dependency, imported only when such an objective is built: an
install without it imports `losses` and trains every other objective.
"""
import ast
import copy
import importlib
import inspect
import math

import torch
from torch import nn

from utils import UserError, available_memory

from .base import Objective
from .geometry import class_means, gather_batch, squared_distances

INSTALL = "pytorch-metric-learning is not installed: pip install pytorch-metric-learning"
# Abstract or helper classes of pml.losses that are not losses one can train with.
NOT_LOSSES = ("BaseLossWrapper", "BaseMetricLossFunction", "GenericPairLoss")
NO_MINER = (None, "", "none")


def pml():
    """The pytorch_metric_learning package with the submodules used here, or UserError."""
    try:
        package = importlib.import_module("pytorch_metric_learning")
        # the submodules used here, which are then attributes of the package
        for name in ("distances", "losses", "miners", "reducers", "regularizers"):
            importlib.import_module(f"pytorch_metric_learning.{name}")
    except ImportError:
        raise UserError(INSTALL) from None
    return package


def _classes(module, base, exclude=()):
    return sorted(name for name, c in vars(module).items()
                  if inspect.isclass(c) and issubclass(c, base) and name not in exclude
                  and not name.endswith("Mixin"))


def loss_names(package=None):
    """The names of pml's loss classes (`pml:NAME` accepts each)."""
    package = package or pml()
    return _classes(package.losses, nn.Module, NOT_LOSSES)


def miner_names(package=None):
    package = package or pml()
    return _classes(package.miners, package.miners.BaseMiner, ("BaseMiner",))


def loss_class(name, package=None):
    package = package or pml()
    if name not in loss_names(package):
        raise ValueError(f"pytorch-metric-learning has no loss {name!r}; its losses: "
                         f"{', '.join(loss_names(package))}")
    return getattr(package.losses, name)


def miner_class(name, package=None):
    package = package or pml()
    if name not in miner_names(package):
        raise ValueError(f"pytorch-metric-learning has no miner {name!r}; its miners: "
                         f"{', '.join(miner_names(package))}")
    return getattr(package.miners, name)


def parse_value(text, package):
    """A --pml-args value: a Python literal (0.5, True, None, 'x', (1, 2)), or a call of a
    pml distance, reducer or regularizer with literal keywords
    (`distance=LpDistance(normalize_embeddings=False)`), or else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        for module in (package.distances, package.reducers, package.regularizers):
            cls = getattr(module, node.func.id, None)
            if inspect.isclass(cls):
                try:
                    return cls(**{k.arg: ast.literal_eval(k.value) for k in node.keywords})
                except (ValueError, TypeError) as e:
                    raise UserError(f"--pml-args: cannot build {text}: {e}") from None
    return text


def parse_pml_args(items, package):
    """--pml-args `key=value ...` (a list, or one string split at spaces) -> the loss's and
    the miner's keyword arguments; `miner.key=value` goes to the miner."""
    if items is None:
        return {}, {}
    if isinstance(items, str):
        items = items.split()
    loss_kwargs, miner_kwargs = {}, {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise UserError(f"--pml-args takes key=value pairs, got {item!r}")
        target = miner_kwargs if key.startswith("miner.") else loss_kwargs
        target[key.removeprefix("miner.")] = parse_value(text, package)
    return loss_kwargs, miner_kwargs


def size_arguments(cls, num_classes, feat_dim):
    """The sizes a loss with learnable parts takes (proxies, class weights), by the names
    pml's constructors use; a subclass may pass them on through **kwargs, so every
    __init__ along the MRO is read."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            try:
                names |= set(inspect.signature(klass.__init__).parameters)
            except (TypeError, ValueError):
                pass
    sizes = {"num_classes": num_classes, "embedding_size": feat_dim, "descriptors_dim": feat_dim}
    return {k: v for k, v in sizes.items() if k in names}


def build_pml(class_name, num_classes, feat_dim, loss_kwargs=None, miner=None,
              miner_kwargs=None, term=None):
    """The objective wrapping pml's loss `class_name` (with `miner`, a class name, or None)."""
    package = pml()
    cls = loss_class(class_name, package)
    kwargs = {**size_arguments(cls, num_classes, feat_dim), **(loss_kwargs or {})}
    try:
        loss = cls(**kwargs)
    except TypeError as e:
        raise UserError(f"pytorch-metric-learning's {class_name}: {e}") from None
    if miner in NO_MINER:
        if miner_kwargs:
            raise UserError(f"miner arguments ({', '.join(miner_kwargs)}) without a miner: "
                            "add --pml-miner NAME")
        mined = None
    else:
        try:
            mined = miner_class(miner, package)(**(miner_kwargs or {}))
        except TypeError as e:
            raise UserError(f"pytorch-metric-learning's {miner}: {e}") from None
    return MetricLearningLoss(num_classes, feat_dim, loss, mined, term or class_name.lower(),
                              name=term or f"pml:{class_name}")


def generic(class_name):
    """The builder of `pml:CLASS_NAME`: its arguments from pml_args, its miner pml_miner."""
    def build(num_classes, feat_dim, pml_args=None, pml_miner=None):
        loss_kwargs, miner_kwargs = parse_pml_args(pml_args, pml())
        return build_pml(class_name, num_classes, feat_dim, loss_kwargs, pml_miner, miner_kwargs)
    return build


def curated(class_name, term, miner=None, **keywords):
    """The builder of a curated short name: each declared hyperparameter goes to pml under
    the keyword `keywords` maps it to (its own name by default; `miner.x` for the miner)."""
    def build(num_classes, feat_dim, **hyper):
        loss_kwargs, miner_kwargs = {}, {}
        for name, value in hyper.items():
            key = keywords.get(name, name)
            target = miner_kwargs if key.startswith("miner.") else loss_kwargs
            target[key.removeprefix("miner.")] = value
        return build_pml(class_name, num_classes, feat_dim, loss_kwargs, miner, miner_kwargs, term)
    return build


def gib(n):
    return f"{n / 2**30:.1f} GiB"


class MetricLearningLoss(Objective):
    """A loss of pytorch-metric-learning (Musgrave et al.) as an objective: forward is
    loss_fn(embeddings, labels[, miner(embeddings, labels)]), logged as `loss` and `term`.

    Learnable parts of the loss (the proxies of ProxyAnchor / ProxyNCA, the class weights W
    of NormalizedSoftmax / SphereFace / ArcFace, ...) are parameters of `loss_fn`, a
    submodule: the optimizer and the checkpoint see them as they see the centers.

    Prediction follows what the loss learns:
    - proxies (classes, dim): the nearest proxy in the loss's own distance (cosine for
      ProxyAnchor, Euclidean between normalised vectors for ProxyNCA: both the largest
      cosine). `centers` are the proxies if the distance keeps the features' lengths, else
      None: a direction is not a point in the feature space (the run then uses class means).
    - class weights W (dim, classes) with get_logits: the argmax of the loss's logits, which
      for the normalised-weight losses is the largest cosine to a weight. `centers` is None.
    - otherwise (pair losses: contrastive, triplet, multi-similarity, supcon, ...): the
      nearest class mean of the training features that observe() last saw (at each
      evaluation), in the loss's distance (pml's default distances normalise: the nearest
      mean direction), over the classes it saw. The means are buffers, saved in the
      checkpoint; `centers` returns them (the GIF draws them).

    Under torchrun the loss sees the global batch (gather_batch: a differentiable
    all-gather), so pairs and mined triplets span ranks: every rank computes the same
    loss; the all-gather's backward sums the ranks' gradients and DistributedDataParallel
    averages them, which gives the one-process gradient.
    """

    def __init__(self, num_classes, feat_dim, loss_fn, miner=None, term="pml", name=None):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.loss_fn, self.miner, self.term = loss_fn, miner, term
        self.name = name or term  # its --loss, for messages
        self.register_buffer("means", torch.zeros(num_classes, feat_dim))
        self.register_buffer("observed", torch.zeros(num_classes, dtype=torch.bool))

    def loss(self, features, labels):
        if self.miner is None:
            return self.loss_fn(features, labels)
        return self.loss_fn(features, labels, self.miner(features, labels))

    def forward(self, features, labels):
        loss = self.loss(*gather_batch(features, labels))
        return {"loss": loss, self.term: loss}

    # ------------------------------------------------------------------ prediction

    def _learned(self, name, shape):
        p = getattr(self.loss_fn, name, None)
        return p if isinstance(p, nn.Parameter) and tuple(p.shape) == shape else None

    @property
    def proxies(self):
        return self._learned("proxies", (self.num_classes, self.feat_dim))

    @property
    def class_weights(self):
        w = self._learned("W", (self.feat_dim, self.num_classes))
        return w if w is not None and hasattr(self.loss_fn, "get_logits") else None

    def similarity(self, features, points):
        """Larger is nearer, in the loss's distance (squared Euclidean without one)."""
        distance = getattr(self.loss_fn, "distance", None)
        if distance is None:
            return -squared_distances(features, points)
        d = distance(features, points.to(features.dtype))
        return d if distance.is_inverted else -d

    def predict(self, features):
        if self.proxies is not None:
            return self.similarity(features, self.proxies).argmax(dim=1)
        if self.class_weights is not None:
            return self.loss_fn.get_logits(features).argmax(dim=1)
        scores = self.similarity(features, self.means)
        return scores.masked_fill(~self.observed, -torch.inf).argmax(dim=1)

    @property
    def centers(self):
        if self.proxies is not None:
            distance = getattr(self.loss_fn, "distance", None)
            return None if getattr(distance, "normalize_embeddings", False) else self.proxies
        if self.class_weights is not None:
            return None
        return self.means

    @torch.no_grad()
    def observe(self, features, labels):
        """The class means of the (clean, whole-split) training features; classes absent
        from `labels` are left out of prediction until they are seen."""
        self.means.copy_(class_means(features, labels, self.num_classes))
        self.observed.copy_(torch.bincount(labels, minlength=self.num_classes) > 0)

    # ------------------------------------------------------------------ memory

    def loss_memory(self, batch_size, device):
        """Bytes one forward + backward of the loss takes on a random batch of this size (the
        global batch: under torchrun the loss sees every rank's samples). CUDA: the
        allocator's peak, measured. CPU: twice the bytes autograd saves for the backward
        (the peak also holds the step's temporaries), an estimate. Runs on a copy, so the
        loss's state (a cross-batch memory, the proxies' gradients) is left as it was."""
        probe = copy.deepcopy(self).to(device)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, self.feat_dim, generator=generator).to(device).requires_grad_()
        y = torch.randint(0, self.num_classes, (batch_size,), generator=generator).to(device)
        inputs = [x, *probe.parameters()]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            torch.autograd.grad(probe.loss(x, y), inputs, allow_unused=True)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - base
        saved = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = probe.loss(x, y)
        torch.autograd.grad(loss, inputs, allow_unused=True)
        return 2 * sum(saved.values())

    def check_batch(self, batch_size, device, budget=None):
        """Raise UserError (one line) if one evaluation of the loss on a batch of
        `batch_size` would not fit in `budget` bytes (default: half of what the device has
        free, the other half left to the model); return the bytes it needs. Some pair
        losses grow as batch^4 / classes (NTXent, LiftedStructure: several GiB at 256).
        Batches up to 128 are measured as they are; larger ones are extrapolated from 64
        and 128 along the power of the batch that those two show (clamped to [1, 4]), so
        that the check itself never needs the memory it warns about."""
        device = torch.device(device)
        if budget is None:
            free = available_memory(device)
            budget = math.inf if free is None else free / 2
        power = None
        try:
            if batch_size <= 128:
                need = self.loss_memory(batch_size, device)
            else:
                small, large = self.loss_memory(64, device), self.loss_memory(128, device)
                power = min(max(math.log2(max(large, 1) / max(small, 1)), 1.0), 4.0)
                need = large * (batch_size / 128) ** power
        except torch.OutOfMemoryError:
            need = math.inf
        except Exception as e:  # an argument of the wrong type or value, which pml takes unchecked
            text = (str(e).strip().splitlines() or [""])[0]
            raise UserError(f"--loss {self.name} fails on a test batch ({type(e).__name__}: "
                            f"{text}): check --pml-args and --pml-miner") from None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if math.isinf(need):
            raise UserError(f"--loss {self.name} on a batch of {batch_size} runs out of memory on "
                            f"{device.type} for the loss alone: lower --batch-size")
        if need > budget:
            fits = ""
            if power is not None:
                fits = f" (at most about {int(128 * (budget / large) ** (1 / power))})"
            raise UserError(
                f"--loss {self.name} on a batch of {batch_size} needs about {gib(need)} for the "
                f"loss alone, more than the {gib(budget)} it can have on {device.type}: lower "
                f"--batch-size{fits}")
        return need
