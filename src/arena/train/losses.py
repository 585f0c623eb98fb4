"""The training losses: cross-entropy on label probabilities, label smoothing of hard labels, and distillation (the
labels' cross-entropy mixed with the KL divergence to teachers on the rows they cover)."""

from __future__ import annotations

import torch


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against label probabilities (one-hot or soft votes)."""
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def smooth_labels(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Hard (one-hot) label rows as (1 - smoothing) * one-hot + smoothing / classes: 0.1 gives 0.95 / 0.05 over two
    classes. Rows that are soft already (vote shares, an earlier model's soft labels) are kept as they are, so that
    no row is smoothed twice; teacher probabilities never pass through here."""
    if not smoothing:
        return labels
    hard = ((labels == 0) | (labels == 1)).all(dim=-1, keepdim=True)
    smoothed = labels * (1 - smoothing) + smoothing / labels.shape[-1]
    return torch.where(hard, smoothed, labels)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, covered: torch.Tensor,
                      weight: float, temperature: float, teacher_weights: list[float] | None) -> torch.Tensor:
    """Per row (1 - weight) * cross-entropy on the labels + weight * T^2 * KL(teacher_T || model_T), the KL terms
    averaged over the teachers covering the row (teacher_weights); rows no teacher covers: the cross-entropy alone.
    teacher (n, teachers, classes) holds probabilities, covered (n, teachers) which teacher has the row."""
    logits = logits.float()
    ce = -(labels * torch.log_softmax(logits, dim=-1)).sum(-1)
    t = temperature
    # A teacher's probabilities are softened as its logits would be: log p / T, renormalised.
    log_p = torch.log_softmax(torch.log(teacher.float().clamp_min(1e-8)) / t, dim=-1)
    log_q = torch.log_softmax(logits / t, dim=-1).unsqueeze(1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * t * t
    w = covered.float() * (torch.tensor(teacher_weights, dtype=kl.dtype, device=kl.device)
                           if teacher_weights is not None else 1.0)
    has_teacher = w.sum(-1) > 0
    kl_row = (w * kl).sum(-1) / w.sum(-1).clamp_min(1e-12)
    return torch.where(has_teacher, (1 - weight) * ce + weight * kl_row, ce).mean()
