"""Shared fixtures. Hub downloads are disabled: tests use only what ships in wheels."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.config import load_params  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# ---- test order: the suite must pass in any order (no test may rely on another's leftovers) ---

def pytest_addoption(parser):
    parser.addoption("--jmt-order", default=None, metavar="reverse|SEED",
                     help="run the tests in reverse order, or shuffled with this integer seed "
                          "(checks that no test depends on another)")


def pytest_collection_modifyitems(config, items):
    order = config.getoption("--jmt-order")
    if order == "reverse":
        items.reverse()
    elif order is not None:
        import random

        random.Random(int(order)).shuffle(items)


def _snapshot(folders) -> dict:
    """path -> (size, mtime_ns) of every file under the folders."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _shared_inputs_untouched(request):
    """Session-shared corpus and stage-1 caches are read-only for tests: a test that changes
    them (rebuilds, deletes, edits) would make later tests pass or fail by order. Tests that
    need to change them work on a copy under tmp_path."""
    folders = []
    if "tiny_corpus" in request.fixturenames:
        folders.append(request.getfixturevalue("tiny_corpus"))
    if "tiny_cache" in request.fixturenames:
        params, _ = request.getfixturevalue("tiny_cache")
        folders += [params.path(getattr(params, stage).out) for stage in ("faces", "audio", "labels", "embed")]
    ignore = {"report.json"}  # a stage re-run on the shared cache rewrites only its report
    before = {p: v for p, v in _snapshot(folders).items() if p.name not in ignore}
    yield
    after = {p: v for p, v in _snapshot(folders).items() if p.name not in ignore}
    changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"{request.node.nodeid} changed session-shared files: {changed[:5]}"


@pytest.fixture(scope="session")
def repo_params():
    """The repository's own params.yaml, loaded."""
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, repo_params):
    """A tiny demo corpus (3 videos, a few seconds), generated once per test session."""
    from pipeline.demo.generate import generate_demo

    out = tmp_path_factory.mktemp("corpus") / "demo"
    generate_demo(repo_params.demo, out, tiny=True, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_corpus):
    """faces, audio, labels and embed caches of the tiny demo corpus, built once (real MTCNN, FER)."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces
    from pipeline.stage1.labels import run_labels

    from .stage1.helpers import params_at

    params = params_at(tmp_path_factory.mktemp("work"), tiny_corpus)
    results = {"faces": run_faces(params), "audio": run_audio(params), "labels": run_labels(params),
               "embed": run_embed(params)}
    return params, results


@pytest.fixture(scope="session")
def compared(tiny_cache, tmp_path_factory):
    """`jmt compare` of three heads x two seeds on the tiny cache: (params, result)."""
    from pipeline.stage2.compare import run_compare

    from .stage2.test_compare import compare_params

    params = compare_params(tiny_cache, tmp_path_factory.mktemp("compare"))
    return params, run_compare(params)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback (`ray start --head` + `ray start --address`, one
    CPU each), shared by the Ray tests of the session and stopped at its end."""
    from pipeline import engine
    from pipeline.local_cluster import LocalCluster

    cluster = LocalCluster(nodes=2, cpus=1).start()
    yield cluster
    engine.shutdown()
    cluster.stop()
