"""Each task's loss over the valid frames of a batch: va (1 - CCC) per axis, expr cross-entropy
(optionally class-weighted from the training labels), au binary cross-entropy (optionally with
pos_weight); the invalid frames never reach it. References are hand-worked or written out in
numpy here."""

import numpy as np
import pytest
import torch

from pipeline.tasks import TASKS, build_task
from pipeline.tasks.au import AUOptions
from pipeline.tasks.expr import ExprOptions

from .test_annotations import AFFWILD2, NAMES, labels_of


def batch(name: str, seed: int = 0, b: int = 2, t: int = 20):
    """pred (B, T, width), labels (B, T, values) with invalid frames, valid (B, T)."""
    task = TASKS.get(name)()
    rng = np.random.default_rng(seed)
    y = labels_of(name, b * t, seed).reshape(b, t, task.values)
    y[1, 10:] = task.invalid
    pred = torch.as_tensor(rng.normal(size=(b, t, task.width)), dtype=torch.float32, ).requires_grad_()
    labels = torch.as_tensor(y, dtype=torch.float32)
    valid = torch.as_tensor(task.valid(y))
    return task, pred, labels, valid


@pytest.mark.parametrize("name", AFFWILD2)
def test_garbage_on_invalid_frames_does_not_change_the_loss(name):
    task, pred, labels, valid = batch(name)
    assert (~valid).sum() >= 10
    state = task.loss_state(labels[valid].numpy())
    loss = task.loss(pred, labels, valid, state)
    garbage = pred.detach().clone()
    garbage[~valid] = 1e4 * torch.randn_like(garbage[~valid])
    assert task.loss(garbage, labels, valid, state).item() == pytest.approx(loss.item(), rel=1e-6)
    # and the invalid frames' labels are not read either (their marker is no class, no value)
    other = labels.clone()
    other[~valid] = 0.0
    assert task.loss(pred, other, valid, state).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all() and pred.grad[valid].abs().sum() > 0


@pytest.mark.parametrize("name", AFFWILD2)
def test_too_few_valid_frames_give_no_loss(name):
    task, pred, labels, _ = batch(name)
    none = torch.zeros(labels.shape[:2], dtype=torch.bool)
    assert task.loss(pred, labels, none, {}) is None
    if name == "va":                                      # CCC needs two frames
        one = none.clone()
        one[0, 0] = True
        assert task.loss(pred, labels, one, {}) is None


def test_va_loss_is_one_minus_ccc_per_axis_by_hand():
    # valence: pred (.1, .2, .3, .4), labels (.2, .4, .6, .8): means .25, .5; population variances
    # .0125, .05; covariance .025 -> CCC = 2 (.025) / (.0125 + .05 + .0625) = 0.4. Arousal exact: 1.
    task = TASKS.get("va")()
    p = torch.tensor([[[0.1, 0.3], [0.2, -0.2], [0.3, 0.9], [0.4, 0.0], [9.0, 9.0]]])
    y = torch.tensor([[[0.2, 0.3], [0.4, -0.2], [0.6, 0.9], [0.8, 0.0], [-5.0, -5.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    assert task.loss(p, y, valid, {}).item() == pytest.approx((1 - 0.4) + (1 - 1.0), abs=1e-6)


def softmax_nll(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return -(z[np.arange(len(z)), target] - np.log(np.exp(z).sum(1)))


def test_expr_cross_entropy_by_hand():
    task = TASKS.get("expr")()
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1, 6, 8)).astype(np.float32)
    target = np.array([4, 0, -1, 7, 4, -1])
    valid = target >= 0
    got = task.loss(torch.as_tensor(logits), torch.as_tensor(target[None, :, None], dtype=torch.float32),
                    torch.as_tensor(valid[None]), {})
    assert got.item() == pytest.approx(softmax_nll(logits[0][valid], target[valid]).mean(), rel=1e-5)


def test_expr_class_weights_from_the_training_labels():
    # training labels 0, 0, 0, 1: N = 4, w_c = N / (8 n_c) -> w_0 = 4/24, w_1 = 4/8, absent classes 0
    task = build_task("expr", ExprOptions(class_weights=True))
    state = task.loss_state(np.array([[0], [0], [0], [1]], np.float32))
    np.testing.assert_allclose(state["class_weights"].numpy(), [1 / 6, 0.5, 0, 0, 0, 0, 0, 0], rtol=1e-6)
    assert build_task("expr").loss_state(np.array([[0], [1]], np.float32)) == {}     # option off
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 8)).astype(np.float32)
    target = np.array([0, 1, 1, 3, 0])
    w = state["class_weights"].numpy()[target]
    want = (w * softmax_nll(logits, target)).sum() / w.sum()    # PyTorch's weighted mean
    got = task.loss(torch.as_tensor(logits[None]), torch.as_tensor(target[None, :, None], dtype=torch.float32),
                    torch.ones(1, 5, dtype=torch.bool), state)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # a batch of classes absent from training only: nothing to learn from it
    only_absent = torch.full((1, 3, 1), 5.0)
    assert task.loss(torch.as_tensor(logits[None, :3]), only_absent, torch.ones(1, 3, dtype=torch.bool), state) is None


def bce(logits: np.ndarray, y: np.ndarray, pos_weight: np.ndarray | None = None) -> float:
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pw = np.ones(logits.shape[-1]) if pos_weight is None else pos_weight
    return float(np.mean(-(pw * y * np.log(s) + (1 - y) * np.log(1 - s))))


def test_au_binary_cross_entropy_and_pos_weight_by_hand():
    task = build_task("au", AUOptions(pos_weight=True))
    train = np.zeros((4, 12), np.float32)
    train[0, 0] = 1                  # AU1 present in 1 of 4 frames: pos_weight 3
    train[:2, 1] = 1                 # AU2 in 2 of 4: 1; the other AUs never present: 1
    state = task.loss_state(train)
    np.testing.assert_allclose(state["pos_weight"].numpy(), [3, 1] + [1] * 10)
    assert build_task("au").loss_state(train) == {}
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 12)).astype(np.float32)
    y = (rng.random((6, 12)) < 0.4).astype(np.float32)
    y[2] = -1                        # an invalid frame
    valid = (y != -1).all(1)
    args = (torch.as_tensor(logits[None]), torch.as_tensor(y[None]), torch.as_tensor(valid[None]))
    assert build_task("au").loss(*args, {}).item() == pytest.approx(bce(logits[valid], y[valid]), rel=1e-5)
    assert task.loss(*args, state).item() == pytest.approx(
        bce(logits[valid], y[valid], state["pos_weight"].numpy()), rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_heads_map_d_to_width(name):
    task = TASKS.get(name)()
    head = task.head(16, 0.1)
    out = head(torch.randn(2, 5, 16))
    assert out.shape == (2, 5, task.width) and torch.isfinite(out).all()
