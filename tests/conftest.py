import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fakedata  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """MNIST, Fashion-MNIST and CIFAR-10 in torchvision's on-disk formats, small and fake."""
    return str(fakedata.write_all(tmp_path_factory.mktemp("data")))
