import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fakedata  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per pytest-xdist worker (and its subprocesses): the workers share the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """MNIST, Fashion-MNIST and CIFAR-10 in torchvision's on-disk formats, small and fake."""
    return str(fakedata.write_all(tmp_path_factory.mktemp("data")))
