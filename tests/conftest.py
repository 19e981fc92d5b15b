"""Shared fixtures. Hub downloads are disabled: tests use only what ships in wheels."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.config import load_params  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


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
    """faces, audio and embed caches of the tiny demo corpus, built once (real MTCNN, FER)."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    from .stage1.helpers import params_at

    params = params_at(tmp_path_factory.mktemp("work"), tiny_corpus)
    results = {"faces": run_faces(params), "audio": run_audio(params), "embed": run_embed(params)}
    return params, results


@pytest.fixture(scope="session")
def compared(tiny_cache, tmp_path_factory):
    """`jmt compare` of three heads x two seeds on the tiny cache: (params, result)."""
    from pipeline.stage2.compare import run_compare

    from .stage2.test_compare import compare_params

    params = compare_params(tiny_cache, tmp_path_factory.mktemp("compare"))
    return params, run_compare(params)
