"""Train and evaluate an objective (xent, cent, standalone center loss, ...; see losses/);
write the run directory. A script: nothing imports it.

    python main.py --loss standalone --dataset mnist --feat-dim 2
    torchrun --nproc-per-node 2 main.py --loss cent --dataset cifar10

flags -> data + model + objective -> restore -> epoch loop -> log/<run>/ -> imgs/<run>/.
"""
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

import engine
import flags
import rundir
from engine import Interrupted, NonFiniteError
from optim import (PER_STEP_SCHEDULERS, build_averaged, build_scheduler, learning_rates,
                   planned_steps)
from utils import (Clock, Dist, UserError, deterministic, pick_device, process_age, rng_state,
                   seed_everything, set_rng_state)


def train(args, explicit, handle_signals=False, clock=None):
    """One run, start to finish (or from its checkpoint on --resume). Returns the run directory.
    clock: a utils.Clock that already holds the seconds before this call (the program's)."""
    clock = clock or Clock()  # where the time goes: train.log's last line
    ddp = Dist()
    args, run_dir, ckpt = rundir.resolve(args, explicit, flags.RESUMABLE_FLAGS)
    if args.resume:
        flags.check_saved(args, run_dir)
    device = setup(args, ddp)
    seed_everything(args.seed)
    clock.lap("setup")
    data = engine.load_data(args, device)
    clock.lap("data")
    channels, size = data.train.images.shape[1], data.train.images.shape[-1]
    net, optimizer = engine.build_net(args, len(data.classes), channels, size, device)
    steps = len(data.train) // args.batch_size
    total, last = plan(args, steps)
    scheduler = build_scheduler(args, optimizer, steps)
    averaged = build_averaged(net, args.ema_decay) if args.ema_decay else None
    start, history, best = restore(ckpt, run_dir, net, optimizer, scheduler, averaged)
    if last <= start and history and rundir.epochs_done(history[-1]) < args.epochs - 1e-9:
        raise UserError(f"{run_dir} ended with a partial epoch {start} (after "
                        f"{rundir.epochs_done(history[-1]):g} epochs), which cannot be finished "
                        f"later: extend it to more than {start} epochs")
    step_net = wrap(net, args, ddp, device)
    log, tb = open_run(args, run_dir, ddp, data, device, history, steps)
    deciding = rundir.split_names(args)[0] + "_acc"
    clock.lap("build")
    with engine.StopRequest(handle_signals) as stop:
        try:
            for epoch in range(start + 1, last + 1):
                t0 = time.perf_counter()
                todo = min(steps, total - (epoch - 1) * steps)  # a partial last epoch: the rest
                record = {"epoch": epoch, **learning_rates(optimizer)}  # at the epoch's start
                if todo < steps:
                    record["epoch_fraction"] = todo / steps
                stats, train_features, seen = engine.train_one_epoch(
                    step_net, net, optimizer, data.train, data.spec, epoch, args, ddp, stop,
                    log.bar, scheduler if args.scheduler in PER_STEP_SCHEDULERS else None,
                    averaged, tb, todo, clock)
                record.update(stats)
                clock.lap("training", device)
                evaluating = epoch % args.eval_every == 0 or epoch == last
                evaluated, idx = net if averaged is None else averaged.module, seen.nonzero().squeeze(1)
                # a pair loss predicts from class means: the trained net's (its running train
                # acc) come from this epoch's features; evaluate() gives the evaluated its own
                net.objective.observe(train_features[idx], data.train.labels[idx])
                kept, centers = {}, engine.centers_of(evaluated.objective, train_features[idx],
                                                      data.train.labels[idx], len(data.classes))
                if evaluating:
                    found, centers, kept = engine.evaluate(
                        evaluated, data, args, ddp, device, epoch == last,
                        train_features[idx], data.train.labels[idx], epoch)
                    record.update(found)
                step_epoch_scheduler(args, scheduler, record.get(deciding))
                record["seconds"] = time.perf_counter() - t0
                clock.lap("evaluation", device)
                history.append(record)
                improved = evaluating and (best["val_acc"] is None or record[deciding] > best["val_acc"])
                if improved:
                    best = {"val_acc": record[deciding], "epoch": epoch}
                if ddp.main:
                    state = rundir.checkpoint_state(net, optimizer, scheduler, averaged, epoch,
                                                    best, history, args, rng_state())
                    save_epoch(run_dir, log, tb, state, improved, data, train_features, seen,
                               kept, centers, record, args)
                clock.lap("saving")
        except (Interrupted, NonFiniteError) as e:
            clock.lap("stopped epoch", device)
            stopped(e, run_dir, history, log, clock)
    if ddp.main and history:
        finish(args, run_dir, log, tb, history, best, deciding, data, clock)
    ddp.close()
    return run_dir


def plan(args, steps):
    """(the run's optimizer steps in all, its last epoch) for `steps` per epoch. A length
    given in --steps becomes args.epochs (steps / steps per epoch): what args.json, the log
    and rundir.state_of read."""
    if args.steps:
        epochs = args.steps / steps
        args.epochs = int(epochs) if epochs.is_integer() else epochs
    total = planned_steps(args, steps)
    return total, math.ceil(total / steps)


def setup(args, ddp):
    """The device, the ranks, and the checks that need them, before any file is touched."""
    device = pick_device(args.device, ddp.local_rank)
    engine.resolve_auto(args, device)
    ddp.init(device)
    if args.batch_size % ddp.world_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{ddp.world_size} ranks")
    if args.tensorboard:
        import tboard  # here, not above: it brings matplotlib, which most runs need only at the end
        tboard.summary_writer()  # missing package: one line, exit 2, before any file is touched
    if args.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    if args.plots and ddp.main:
        rundir.writable_dir(args.img_dir, "--img-dir", create=False)
    deterministic(args.deterministic, device)
    return device


def restore(ckpt, run_dir, net, optimizer, scheduler, averaged):
    """The checkpoint's weights and states into the fresh run; (epoch, history, best)."""
    if ckpt is None:
        return 0, [], {"val_acc": None, "epoch": None}
    try:
        net.model.load_state_dict(ckpt["model"])
        net.objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if averaged is not None:
            averaged.load_state_dict(ckpt["averaged"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"the checkpoint in {run_dir} does not fit this model and objective: "
                        f"{str(e).strip().splitlines()[0]}") from None
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"], list(ckpt["history"]), dict(ckpt["best"])


def wrap(net, args, ddp, device):
    """What takes the training steps: the Net, under DistributedDataParallel and
    torch.compile where asked."""
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if args.compile else net


def open_run(args, run_dir, ddp, data, device, history, steps):
    """The run directory made (rank 0), its log, and the TensorBoard writer if asked."""
    log = rundir.RunLog(run_dir)
    log.bar = ddp.main and (args.progress if args.progress is not None else sys.stderr.isatty())
    tb = None
    if ddp.main:
        log.held = rundir.create(run_dir, args, fresh=args.resume is None)
        start = history[-1]["epoch"] if history else 0
        if args.resume:
            log.rewrite_metrics(history)
            log.info(f"resumed {run_dir} after epoch {start}")
        else:
            sizes = " / ".join(f"{len(s)} {n}" for n, s in (("train", data.train), ("val", data.val),
                               ("test", data.test), ("unseen", data.unseen)) if s is not None)
            log.info(f"{rundir.run_name(args)}: {args.loss} loss, {args.model} model, feat_dim "
                     f"{args.feat_dim}, {sizes} samples, device {device}"
                     + (f" x {ddp.world_size} ranks" if ddp.enabled else ""))
        if args.tensorboard:  # from its first step on, TensorBoard drops what a stopped run wrote
            import tboard
            tb = tboard.Board(run_dir, vars(args), purge_step=start * steps + 1)
            if args.resume:
                tb.catch_up(history)

    return log, tb


def step_epoch_scheduler(args, scheduler, deciding_acc):
    """The epoch-level schedulers; the plateau one on the deciding split's accuracy."""
    if scheduler is None or args.scheduler in PER_STEP_SCHEDULERS:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if deciding_acc is not None:
            scheduler.step(deciding_acc)
    else:
        scheduler.step()


def save_epoch(run_dir, log, tb, state, improved, data, train_features, seen, kept, centers,
               record, args):
    """Rank 0, after each epoch: the snapshot, the checkpoints, the two logs, TensorBoard."""
    snap = rundir.snapshot_indices(len(data.train), args.feat_dim, args.snapshot_size,
                                   train_features.device)
    snap = snap[seen[snap]]
    arrays = {"train_features": train_features[snap], "train_labels": data.train.labels[snap],
              "centers": centers, "classes": np.array(data.classes, dtype=str)}
    if data.unseen is not None:
        arrays["unseen_classes"] = np.array(data.unseen.classes, dtype=str)
    for key in ("val", "unseen"):
        if f"{key}_features" in kept:
            keep = rundir.snapshot_indices(len(kept[f"{key}_labels"]), args.feat_dim,
                                           args.snapshot_size, train_features.device)
            arrays.update({f"{key}_features": kept[f"{key}_features"][keep],
                           f"{key}_labels": kept[f"{key}_labels"][keep]})
    rundir.save_snapshot(run_dir, record["epoch"], arrays, record)
    rundir.save_checkpoint(state, os.path.join(run_dir, "last.pt"))
    if improved:
        rundir.save_checkpoint(state, os.path.join(run_dir, "best.pt"))
    log.metrics(record)
    log.info(rundir.RunLog.line(record, args.epochs))
    if tb is not None:
        tb.epoch(record)  # after the checkpoint; frames drawn in a background thread


def stopped(e, run_dir, history, log, clock):
    """A stop inside the loop: say where the run stands and where its time went, in train.log
    too, and re-raise."""
    done = history[-1]["epoch"] if history else 0
    where = (f"epoch {done} is the last saved; continue with: python main.py --resume {run_dir}"
             if done else f"no epoch finished, so no checkpoint was written in {run_dir}")
    if isinstance(e, NonFiniteError):
        hint = "a smaller --lr, or a smaller weight of that term" if "loss term" in str(e) else "a smaller --lr"
        message = f"{e}; the run stopped, {where} ({hint} may help)"
    else:
        message = f"{e}; {where}"
    log.info(f"error: {message}" if isinstance(e, NonFiniteError) else f"interrupted: {message}",
             echo=False)
    log.info(rundir.timing_line(clock.seconds), echo=False)
    raise type(e)(message) from None


def finish(args, run_dir, log, tb, history, best, deciding, data, clock):
    """The last lines of the log, TensorBoard's embedding, the pictures, and where the
    process's time went (clock: utils.Clock)."""
    final = history[-1]
    tested = [f"{k.replace('_', ' ')} {final[k]:.4f}" for k in ("test_acc", "seen_acc", "unseen_map_at_r")
              if final.get(k) is not None and k != deciding]
    log.info(f"done: final {deciding.replace('_', ' ')} {final.get(deciding, float('nan')):.4f}, "
             f"best {best['val_acc'] if best['val_acc'] is not None else float('nan'):.4f} "
             f"(epoch {best['epoch']})"
             + (", " + ", ".join(tested) if tested else ""))
    if tb is not None:
        split = data.val if data.val is not None else data.test
        tb.embedding(split.images[rundir.snapshot_indices(len(split), args.feat_dim,
                                                          args.snapshot_size, split.images.device)])
        tb.close()
    if args.plots:
        import plots  # matplotlib: a second of imports that a run without pictures skips
        out = os.path.join(args.img_dir, os.path.basename(run_dir))
        try:
            for path in plots.draw_run(run_dir, out):
                log.info(f"wrote {path}")
        except Exception as e:  # the run itself is safe on disk; say so and go on
            log.info(f"pictures not drawn ({type(e).__name__}: {e}); "
                     f"retry with: python visualize.py {run_dir}")
        clock.lap("drawing")
    log.info(rundir.timing_line(clock.seconds))


def main(argv=None, handle_signals=False, startup=None):
    """The program: one line on stderr and an exit code for every failure it foresees.
    startup: the seconds the process took before (interpreter, imports)."""
    clock = Clock()
    if startup is not None:
        clock.seconds["start-up and imports"] = startup
    args, explicit = flags.parse_args(argv)
    try:
        train(args, explicit, handle_signals, clock)
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
    except KeyboardInterrupt:  # Ctrl-C outside the epoch loop, or a second one inside it
        if not handle_signals:  # an in-process caller (pytest) handles its own Ctrl-C
            raise
        if Dist().main:
            print("interrupted: stopped at once; every file written so far is whole (atomic), "
                  "continue a started run with --resume", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main(handle_signals=True, startup=process_age())
    # Every file is written and closed (atomically); what is left is the interpreter tearing
    # down its modules (torch._dynamo's among them, which every optimizer imports): 0.6 s of
    # a one-minute run on two CPU cores, skipped.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
