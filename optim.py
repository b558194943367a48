"""The optimizer, its learning-rate schedule and the weight average of a run (flags in
main.py, presets in recipes.py)."""
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
    @torch.no_grad()
    def ema(averaged, current, n):
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(averaged[0].device)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # BatchNorm's num_batches_tracked
            for a, c in zip(averaged, current):
                a.copy_(c)
    return torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=ema, use_buffers=True)


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
