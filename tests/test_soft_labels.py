"""Soft labels: train.label_smoothing on hard labels (never on soft ones or on teachers)."""

from types import SimpleNamespace

import pytest
import torch

from arena import config, train
from arena.config import ConfigError
from arena.train import PreferenceTrainer

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]])


def test_smoothing_changes_hard_rows_only():
    labels = torch.tensor([[1.0, 0, 0], [0.5, 0.25, 0.25], [0, 0, 1.0]])
    got = train.smooth_labels(labels, 0.3)
    torch.testing.assert_close(got, torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    torch.testing.assert_close(train.smooth_labels(torch.tensor([[0.0, 1.0]]), 0.1), torch.tensor([[0.05, 0.95]]))
    assert train.smooth_labels(labels, 0.0) is labels


def compute_loss(smoothing, training, teacher=None):
    """PreferenceTrainer's loss on LOGITS and one-hot labels, as in a training step (or an evaluation)."""
    args = SimpleNamespace(label_smoothing=smoothing, distill_weight=0.5, distill_temperature=1.0, teacher_weights=None)
    trainer = SimpleNamespace(args=args, callback_handler=SimpleNamespace(callbacks=[]))
    model = lambda **inputs: LOGITS  # noqa: E731
    model.training = training
    inputs = {"labels": torch.eye(3), "input_ids": None}
    if teacher is not None:
        inputs["teacher"], inputs["teacher_covered"] = teacher, torch.ones(3, 1)
    return PreferenceTrainer.compute_loss(trainer, model, inputs)


def test_the_training_loss_smooths_the_labels_and_leaves_evaluation_and_teachers_alone():
    smoothed = train.smooth_labels(torch.eye(3), 0.2)
    assert compute_loss(0.2, True) == pytest.approx(train.soft_cross_entropy(LOGITS, smoothed).item())
    assert compute_loss(0.2, False) == pytest.approx(train.soft_cross_entropy(LOGITS, torch.eye(3)).item())
    teacher = torch.tensor([[0.6, 0.3, 0.1]] * 3).unsqueeze(1)
    want = train.distillation_loss(LOGITS, smoothed, teacher, torch.ones(3, 1), 0.5, 1.0, None)
    assert compute_loss(0.2, True, teacher) == pytest.approx(want.item())
    # the teacher's half is the KL to the teacher as given: smoothing it too would give another loss
    twice = train.distillation_loss(LOGITS, smoothed, teacher * 0.8 + 0.2 / 3, torch.ones(3, 1), 0.5, 1.0, None)
    assert compute_loss(0.2, True, teacher) != pytest.approx(twice.item())


def test_label_smoothing_range_is_checked():
    assert config.from_dict({"train": {"label_smoothing": 0.1}}).train.label_smoothing == 0.1
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="train.label_smoothing"):
            config.from_dict({"train": {"label_smoothing": bad}})
