import pytest
import torch

from pipeline import cache

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


@pytest.fixture(scope="session")
def every_task(tiny_cache, tmp_path_factory):
    """A concat head on the demo cache's real streams trained for va, expr and au (the predict and
    overlay tests): the labels are synthetic (tests/embeddings.py), one labels file per entry of
    the cache, each task in the entry's va split."""
    from ..embeddings import write_labels
    from ..stage1.helpers import params_at

    params, _ = tiny_cache
    folder = tmp_path_factory.mktemp("every_task")
    for name in cache.entries(params.path(params.labels.out)):
        with cache.open_entry(cache.entry_path(params.path(params.labels.out), name)) as f:
            split = cache.attrs_of(f)["tasks"][0]["split"]
            n = int(f.attrs["n_frames"])
        write_labels(folder / "labels", name, dict.fromkeys(("va", "expr", "au"), split), n=n)
    trained = params_at(folder, params.path(params.corpus.root), embed={"out": str(params.path(params.embed.out))},
                        labels={"out": str(folder / "labels")}, model={"fusion": "concat", "d_model": 16},
                        train={"tasks": ["va", "expr", "au"], "epochs": 2, "window": 16, "hop": 8, "batch_size": 4,
                               "out": str(folder / "model.pt"), "live_dir": str(folder / "live")})
    train_model(trained, quiet=True)
    return trained.path(trained.train.out)
