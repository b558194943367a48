"""The optimizer, its learning-rate schedule and the weight average of a run (flags in
main.py, presets in recipes.py)."""
import itertools
import math

import torch

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("plateau", "step", "cosine", "warmup-cosine", "none")
PER_STEP_SCHEDULERS = ("warmup-cosine",)  # stepped after every batch, not every epoch


# the points in the feature space an objective learns: its centers, a proxy loss's proxies
CENTER_PARAMETERS = ("centers", "proxies")


def center_parameters(objective):
    """[(name, parameter)] of the objective's learned points (CENTER_PARAMETERS): the
    optimizer's "centers" group, with --lr-cent (the proxy losses' papers give their proxies
    a learning rate of their own, as center loss does its centers). Class-weight matrices of
    the softmax-like heads stay with the net, as xent's classifier does."""
    return [(n, p) for n, p in objective.named_parameters() if n.endswith(CENTER_PARAMETERS)]


def build_optimizer(args, model, objective):
    """SGD (or AdamW, --optimizer adamw) over the model and the objective; the centers (and
    proxies) in a group of their own (--lr-cent). With --wd-exempt, BatchNorm weights, biases
    and centers (every parameter that is not a conv or linear weight matrix) get no weight
    decay. AdamW decouples the decay from the gradient (w -= lr * wd * w) and ignores
    --momentum and --nesterov."""
    decay = args.weight_decay
    exempt = decay if not args.wd_exempt else 0.0
    groups = {}  # (lr, weight decay, name) -> params

    def add(p, lr, wd, name):
        groups.setdefault((lr, wd, name), []).append(p)
    for p in model.parameters():
        add(p, args.lr, decay if p.ndim > 1 else exempt, "model")
    centers = {id(p) for _, p in center_parameters(objective)}
    for p in objective.parameters():
        if id(p) in centers:
            add(p, args.lr_cent or args.lr, exempt, "centers")
        else:
            add(p, args.lr, decay if p.ndim > 1 else exempt, "model")
    param_groups = [{"params": ps, "lr": lr, "weight_decay": wd, "name": name}
                    for (lr, wd, name), ps in groups.items()]
    if args.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=decay)
    return torch.optim.SGD(param_groups, lr=args.lr, momentum=args.momentum,
                           nesterov=args.nesterov, weight_decay=decay)


def learning_rates(optimizer):
    """The logged learning rates: {"lr": the net's}, and "lr_centers" where --lr-cent gives
    the centers another."""
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    out = {"lr": lrs["model"]}
    if lrs.get("centers", lrs["model"]) != lrs["model"]:
        out["lr_centers"] = lrs["centers"]
    return out


def build_averaged(net, decay):
    """The exponential moving average of the whole Net (model, objective, BatchNorm buffers)
    that gets evaluated. Its decay warms up as min(decay, (1 + n) / (10 + n)) over the n
    updates so far (as TensorFlow's ExponentialMovingAverage with num_updates), so a short run
    is not dominated by the initial weights. The update count stays on the CPU and the decay
    is a tensor: updating is no host-device sync."""
    return WeightAverage(net, decay)


class WeightAverage(torch.optim.swa_utils.AveragedModel):
    """swa_utils.AveragedModel (the copy of the module, n_averaged, state_dict, update_bn's
    interface) whose update_parameters keeps the lists of tensors it lerps, gathered on the
    first call. AveragedModel's own gathers, detaches, moves and groups every parameter and
    buffer again on each call: 0.57 ms an update of the strided ResNet on two CPU cores against
    0.11 ms here, 2-4 % of a quick run's step. The same operations on the same tensors
    otherwise: the first update copies, the later ones lerp the floating-point tensors by
    1 - d and copy the others (BatchNorm's num_batches_tracked)."""

    def __init__(self, net, decay):
        super().__init__(net, use_buffers=True)
        self.decay = decay
        self._model = None  # id of the model the lists below are of
        self._lists = None  # (mine, its) floating-point tensors, (mine, its) others

    @torch.no_grad()
    def update_parameters(self, model):
        if self._model != id(model):
            floats, others = ([], []), ([], [])
            for a, b in zip(itertools.chain(self.module.parameters(), self.module.buffers()),
                            itertools.chain(model.parameters(), model.buffers())):
                mine, theirs = floats if a.is_floating_point() else others
                mine.append(a.detach())
                theirs.append(b.detach())
            self._model = id(model)
            self._lists = floats + others
        mine, theirs, my_others, their_others = self._lists
        n = self.n_averaged  # on the CPU: reading it is no sync
        if n.item() == 0:
            torch._foreach_copy_(mine + my_others, theirs + their_others)
        else:
            d = torch.clamp((1 + n) / (10 + n), max=self.decay).to(mine[0].device)
            torch._foreach_lerp_(mine, theirs, 1 - d)
            if my_others:
                torch._foreach_copy_(my_others, their_others)
        self.n_averaged += 1


def planned_steps(args, steps_per_epoch):
    """The optimizer steps of the whole run: --steps, or --epochs (a fraction allowed) of
    steps_per_epoch, rounded up, so that the run reaches the epochs it was asked for (the
    tolerance: --steps N is recorded as N / steps_per_epoch epochs, which may round above)."""
    if getattr(args, "steps", None):
        return args.steps
    return max(1, math.ceil(args.epochs * steps_per_epoch - 1e-6))


def build_scheduler(args, optimizer, steps_per_epoch):
    """Epoch-level schedulers, or (PER_STEP_SCHEDULERS) one stepped after every batch: that
    one spans the planned steps exactly, a partial last epoch included."""
    if args.scheduler == "warmup-cosine":
        total = planned_steps(args, steps_per_epoch)
        warmup = min(total - 1, round(args.warmup_epochs * steps_per_epoch))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total - warmup)
        if warmup <= 0:
            return cosine
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0 / warmup, 1.0, warmup)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], [warmup])
    if args.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.2, patience=10, threshold=0.1, threshold_mode="rel")
    if args.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, args.step_size, args.gamma)
    if args.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    return None
