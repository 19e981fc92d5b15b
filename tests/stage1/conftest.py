import pytest

from .helpers import params_at


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_corpus):
    """faces, audio and embed caches of the tiny demo corpus, built once (real MTCNN, FER)."""
    from pipeline.stage1.audio import run_audio
    from pipeline.stage1.embed import run_embed
    from pipeline.stage1.faces import run_faces

    params = params_at(tmp_path_factory.mktemp("work"), tiny_corpus)
    results = {"faces": run_faces(params), "audio": run_audio(params), "embed": run_embed(params)}
    return params, results
