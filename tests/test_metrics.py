"""pipeline.metrics: CCC against a numpy reference, F1 from counts against hand-worked values and
scikit-learn (confusion_matrix, f1_score)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

from pipeline.metrics import (CCCAccumulator, binary_counts, ccc, ccc_from_sums, ccc_sums, ccc_torch, confusion,
                              f1_from_counts, macro_f1_from_confusion)


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


# ---------------------------------------------------------------- F1 from counts

def test_confusion_by_hand_rows_true_columns_predicted():
    m = confusion(np.array([0, 1, 1, 2, 0]), np.array([0, 0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert m.dtype == np.int64
    np.testing.assert_array_equal(confusion(np.zeros(0), np.zeros(0), 4), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="equal lengths"):
        confusion(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError, match=r"class indices must lie in 0..2"):
        confusion(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match=r"class indices must lie in 0..2"):
        confusion(np.array([0]), np.array([-1]), 3)


@pytest.mark.parametrize("seed", range(3))
def test_confusion_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, 8, 300), rng.integers(0, 8, 300)
    np.testing.assert_array_equal(confusion(p, t, 8), confusion_matrix(t, p, labels=range(8)))


def test_f1_from_counts_by_hand():
    # 2 TP / (2 TP + FP + FN): 2*3 / (6 + 1 + 2) = 2/3; no TP -> 0; nothing at all -> 0
    np.testing.assert_allclose(f1_from_counts([3, 0, 0, 5], [1, 2, 0, 0], [2, 1, 0, 0]), [2 / 3, 0, 0, 1])
    batched = f1_from_counts(np.ones((2, 3)), np.zeros((2, 3)), np.ones((2, 3)))
    assert batched.shape == (2, 3) and np.allclose(batched, 2 / 3)


def test_macro_f1_from_confusion_by_hand():
    # [[1, 1, 0], [0, 1, 0], [1, 0, 1]]: class 0 TP 1, FP 1, FN 1 -> 1/2; class 1 TP 1, FP 1, FN 0 -> 2/3;
    # class 2 TP 1, FP 0, FN 1 -> 2/3; macro (1/2 + 2/3 + 2/3) / 3 = 11/18
    m = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert float(macro_f1_from_confusion(m)) == pytest.approx(11 / 18)
    both = macro_f1_from_confusion(np.stack([m, np.eye(3)]))
    np.testing.assert_allclose(both, [11 / 18, 1.0])
    # a class never labelled nor predicted counts 0 in the mean (sklearn's zero_division=0)
    padded = np.zeros((4, 4))
    padded[:3, :3] = m
    assert float(macro_f1_from_confusion(padded)) == pytest.approx(11 / 18 * 3 / 4)


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_is_sklearns_over_all_8_classes(seed):
    rng = np.random.default_rng(seed)
    t = rng.choice([0, 2, 3, 7], 250)                        # classes 1, 4, 5, 6 never labelled
    p = np.where(rng.random(250) < 0.5, t, rng.integers(0, 7, 250))   # 7 never predicted wrongly
    want = f1_score(t, p, average="macro", labels=range(8), zero_division=0)
    assert float(macro_f1_from_confusion(confusion(p, t, 8))) == pytest.approx(want, abs=1e-12)


def test_binary_counts_by_hand():
    pred = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    true = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # AU a: TP 1 (row 0), FP 1 (row 1), FN 1 (row 2), TN 1; AU b: TP 1, FP 1, FN 0, TN 2
    np.testing.assert_array_equal(binary_counts(pred, true), [[1, 1, 1, 1], [1, 1, 0, 2]])
    with pytest.raises(ValueError, match=r"two equal \(n, k\) arrays"):
        binary_counts(pred, true[:3])
    with pytest.raises(ValueError, match=r"two equal \(n, k\) arrays"):
        binary_counts(pred[:, 0], true[:, 0])


@pytest.mark.parametrize("seed", range(3))
def test_binary_counts_give_sklearns_binary_f1(seed):
    rng = np.random.default_rng(seed)
    true = rng.random((300, 12)) < 0.3
    pred = rng.random((300, 12)) < 0.4
    true[:, 5], pred[:, 5] = False, False                    # an AU neither present nor predicted
    c = binary_counts(pred, true)
    assert (c.sum(1) == 300).all()
    got = f1_from_counts(c[:, 0], c[:, 1], c[:, 2])
    want = [f1_score(true[:, k], pred[:, k], zero_division=0) for k in range(12)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[5] == 0.0
