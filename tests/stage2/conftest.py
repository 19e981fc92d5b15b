import pytest

from pipeline.stage2.train import train_model

from .test_train import stage2_params


@pytest.fixture(scope="session")
def trained(tiny_cache, tmp_path_factory):
    """A JMT head trained for a few epochs on the tiny cache (params returned)."""
    params = stage2_params(tiny_cache, tmp_path_factory.mktemp("trained"))
    train_model(params, quiet=True)
    return params
