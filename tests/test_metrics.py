import numpy as np
import pytest
import torch

from pipeline.metrics import CCCAccumulator, ccc, ccc_from_sums, ccc_sums, ccc_torch


def ccc_reference(x, y):
    """Plain numpy, population moments."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_torchmetrics_doc_example_population_convention():
    # torchmetrics' ConcordanceCorrCoef doc example: it reports 0.9777 (1/(n-1) moments)
    target, pred = [3, -0.5, 2, 7], [2.5, 0.0, 2, 8]
    assert round(ccc(pred, target), 4) == 0.9768
    x, y = np.array(pred), np.array(target)
    sample = 2 * np.cov(x, y)[0, 1] / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2)
    assert round(sample, 4) == 0.9777


@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 1000)
    x = 0.6 * y + rng.normal(0.1, 0.3, 1000)
    assert ccc(x, y) == pytest.approx(ccc_reference(x, y), abs=1e-12)
    assert ccc(torch.tensor(x), torch.tensor(y)) == pytest.approx(ccc_reference(x, y), abs=1e-12)
    acc = CCCAccumulator()
    for i in range(0, 1000, 137):
        acc.update(x[i:i + 137], y[i:i + 137])
    assert acc.compute() == pytest.approx(ccc_reference(x, y), abs=1e-10)


def test_properties():
    y = np.linspace(-1, 1, 50)
    assert ccc(y, y) == pytest.approx(1.0)
    assert ccc(-y, y) == pytest.approx(-1.0)
    assert ccc(y + 0.5, y) < 1.0  # a bias is penalised, unlike Pearson
    assert ccc(np.zeros(50), y) == pytest.approx(0.0)


def test_differentiable():
    x = torch.randn(64, requires_grad=True)
    loss = 1 - ccc_torch(x, torch.randn(64))
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_errors():
    with pytest.raises(ValueError, match="equal lengths"):
        ccc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        ccc([1.0], [1.0])
    with pytest.raises(ValueError, match="undefined"):
        ccc(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="at least 2 valid frames"):
        CCCAccumulator().compute()


def test_ccc_from_summed_parts_equals_ccc_of_the_whole():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=90), rng.normal(size=90) + 0.3
    parts = np.stack([ccc_sums(x[i:i + 30], y[i:i + 30]) for i in (0, 30, 60)])
    assert float(ccc_from_sums(parts.sum(0))) == pytest.approx(ccc(x, y), abs=1e-12)
    batched = ccc_from_sums(np.stack([parts.sum(0), parts[0], ccc_sums(x[:1], y[:1])]))
    assert batched.shape == (3,) and batched[1] == pytest.approx(ccc(x[:30], y[:30])) and np.isnan(batched[2])
