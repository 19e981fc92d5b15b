import pytest
import torch

from pipeline.stage2.train import train_model

from .test_train import stage2_params


@pytest.fixture(scope="session")
def trained(tiny_cache, tmp_path_factory):
    """A JMT head trained for a few epochs on the tiny cache (params returned)."""
    params = stage2_params(tiny_cache, tmp_path_factory.mktemp("trained"))
    train_model(params, quiet=True)
    return params


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and two threads on a busy 2-core machine
    spin against each other (measured here under load: test_heads.py 204 s with two threads,
    23 s with one; one jmt training run 298 s against 14 s). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
