"""torchrun / DistributedDataParallel computes what one process computes: with gloo on CPU,
2 ranks with B samples each give the loss and the updated parameters of 1 process with 2B."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from conftest import ROOT
from losses import build_objective
from engine import Net
from models import build_model
from rundir import read_jsonl

# every --loss, and the other heads of xent and cent: name -> (loss, hyperparameters)
OBJECTIVES = {
    "xent": ("xent", {}), "cent": ("cent", {}), "standalone": ("standalone", {}),
    "center-push": ("center-push", {}), "center-softmax": ("center-softmax", {"weight_intra": 0.5}),
    "margin": ("margin", {"margin": 0.01}),  # the initial features are small: some pairs inside
    "cosface": ("cosface", {}), "arcface": ("arcface", {}),
    "focal": ("xent", {"head_loss": "focal"}), "cent-hinge": ("cent", {"head_loss": "hinge"}),
    "label-smoothing": ("xent", {"label_smoothing": 0.1}),
}
B = 6  # per rank


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2 * B, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 2, 3])  # every rank holds every class
    return x, y


def step(name, x, y, wrap=None):
    """One SGD step of LeNet++ + objective (float64) from a fixed initial state: the loss
    (averaged over ranks) and the updated parameters."""
    torch.manual_seed(0)
    loss, hyper = OBJECTIVES[name]
    objective = build_objective(loss, 4, 2, inter_delta=0.5, **hyper)
    net = Net(build_model("lenet", 2, 1, 28), objective).double()
    module = wrap(net) if wrap else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _, terms = module(x, y)
    terms["loss"].backward()
    optimizer.step()
    loss = terms["loss"].detach().clone()
    if wrap:
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    return loss.item(), {k: v.detach().clone() for k, v in net.state_dict().items()}


def worker(rank, world_size, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    x, y = batch()
    mine = slice(rank * B, (rank + 1) * B)
    results = {name: step(name, x[mine], y[mine], nn.parallel.DistributedDataParallel)
               for name in OBJECTIVES}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "ranks.pt")
    mp.spawn(worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    ranks = torch.load(out)
    x, y = batch()
    for name in OBJECTIVES:
        loss, params = step(name, x, y)
        assert ranks[name][0] == pytest.approx(loss, rel=1e-12), name
        moved = 0
        for key, value in params.items():
            torch.testing.assert_close(ranks[name][1][key], value, rtol=1e-10, atol=1e-12)
            moved += 1
        assert moved == len(ranks[name][1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_matches_one_process(tmp_path, data_dir):
    # A small lr: the float32 rounding differences of the two (first step: ~1e-7) are amplified
    # by the training dynamics; at lr 1e-3 they reach ~1e-3 after 16 steps, at 3e-4 ~5e-5.
    flags = ["main.py", "--loss", "standalone", "--model", "lenet", "--lr", "0.0003",
             "--epochs", "2", "--batch-size", "64", "--data-dir", data_dir, "--no-download",
             "--no-progress", "--no-plots", "--tensorboard", "--device", "cpu"]  # gloo, any host
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         *flags, "--log-dir", str(tmp_path / "ddp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = subprocess.run([sys.executable, *flags, "--log-dir", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert os.listdir(tmp_path / "ddp") == ["standalone-mnist-feat=2"]
    assert ddp.stdout.count("epoch   1/2") == 1  # only rank 0 prints

    def records(root):
        return read_jsonl(tmp_path / root / "standalone-mnist-feat=2" / "metrics.jsonl")

    for a, b in zip(records("ddp"), records("one"), strict=True):
        for key in ("train_loss", "train_intra", "train_inter", "train_acc", "train_nc_acc",
                    "test_acc", "test_nc_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), key

    # resume under torchrun: one more epoch, the first two kept as they were
    first_two = records("ddp")
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "main.py",
         "--resume", str(tmp_path / "ddp" / "standalone-mnist-feat=2"), "--epochs", "3",
         "--data-dir", data_dir, "--no-progress", "--no-plots"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = records("ddp")
    assert [r["epoch"] for r in after] == [1, 2, 3] and after[:2] == first_two

    # TensorBoard: only rank 0 writes (one event file per launch), the resumed curve goes on
    tb = tmp_path / "ddp" / "standalone-mnist-feat=2" / "tb"
    assert len([f for f in os.listdir(tb) if f.startswith("events.out")]) == 2
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("test/acc")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("step/loss")] == [8, 16, 24]  # 8 steps < --log-interval
