"""The baselines (class prior, length LR, its recalibration, the head's step-0 init) and their settings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from arena import data, metrics
from arena.data.features import HEAD_FEATURE_CLIP
from benchmarks.split import prompt_keys

LENGTH_LR = {"C": 1.0, "max_iter": 5000}
CALIBRATION = {"form": "softmax(log p / T + b)", "params": ["log T", "b_A", "b_B"], "fixed": "b_tie = 0",
               "folds": 5, "groups": "prompt", "optimizer": "Nelder-Mead"}


def class_prior(train_df: pd.DataFrame) -> np.ndarray:
    return data.label_matrix(train_df).mean(axis=0)


def length_lr(seed: int = 0):
    """StandardScaler + multinomial LogisticRegression on data.length_features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(**LENGTH_LR, random_state=seed))


def full_proba(p: np.ndarray, classes) -> np.ndarray:
    """Probabilities with all three classes as columns, even if a class was absent in training."""
    out = np.full((len(p), 3), 1e-6)
    out[:, np.asarray(classes).astype(int)] = p
    return out / out.sum(axis=1, keepdims=True)


def fit_length_baseline(train_df: pd.DataFrame, seed: int = 0):
    x, y = data.length_features(train_df), train_df["label"].to_numpy()
    return length_lr(seed=seed).fit(x, y)


def predict_length_baseline(model, df: pd.DataFrame) -> np.ndarray:
    return full_proba(model.predict_proba(data.length_features(df)), model.classes_)


def calibrate(probs: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Temperature + class bias: softmax(log p / T + b), params = [log T, b_A, b_B] (b_tie = 0)."""
    from arena.predict import softmax

    z = np.log(np.clip(probs, 1e-12, 1)) / math.exp(params[0])
    return softmax(z + np.array([params[1], params[2], 0.0]))


def fit_calibration(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The calibration params minimising log loss of `probs` (out-of-fold predictions) against labels `y`."""
    from scipy.optimize import minimize

    best = minimize(lambda t: metrics.log_loss(y, calibrate(probs, t)), np.zeros(3), method=CALIBRATION["optimizer"],
                    options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 2000})
    return best.x


def fit_calibrated_length_baseline(train_df: pd.DataFrame, seed: int = 0):
    """The length LR recalibrated on its own k-fold (grouped by prompt) out-of-fold training predictions."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    x, y = data.length_features(train_df), train_df["label"].to_numpy()
    groups = pd.factorize(prompt_keys(train_df))[0]
    k = min(CALIBRATION["folds"], len(set(groups)))
    oof = cross_val_predict(length_lr(seed=seed), x, y, groups=groups, cv=GroupKFold(n_splits=k),
                            method="predict_proba")
    return fit_length_baseline(train_df, seed), fit_calibration(full_proba(oof, np.unique(y)), y)


def fit_head_init(train_df: pd.DataFrame, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The default model's head as training starts: `model.head_init: prior` with length features fits
    arena.train.fit_length_head on the head's standardised, clipped features (the hidden-state part is zero).
    Returns (feature scaler, coef, intercept)."""
    from arena import train

    scaler = data.fit_feature_scaler(train_df)
    coef, intercept = train.fit_length_head(data.head_features(train_df, scaler), data.label_matrix(train_df), seed)
    return scaler, coef, intercept


def head_init_probs(fit: tuple[dict, np.ndarray, np.ndarray], df: pd.DataFrame, tta: bool = True) -> np.ndarray:
    """Probabilities of that starting head, averaged over both A/B orders with tta=True."""
    from arena.predict import combine_tta, softmax

    scaler, coef, intercept = fit
    logits = data.head_features(df, scaler) @ coef.T + intercept
    if not tta:
        return softmax(logits)
    swapped = data.head_features(df, scaler, swap=True) @ coef.T + intercept
    return combine_tta(logits, swapped, "prob")


def qualname(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def settings(cfg, calibration_params: np.ndarray) -> dict:
    """How each baseline was built, for the report: pipeline steps, C, features, calibration form and fit."""
    from arena import train

    return {
        "length_lr": {"pipeline": [type(step).__name__ for _, step in length_lr().steps], **LENGTH_LR,
                      "features_from": qualname(data.length_features), "features": list(data.LENGTH_FEATURE_NAMES)},
        "calibration": {**CALIBRATION, "fitted": [float(v) for v in calibration_params]},
        "step0": {"head_init": cfg.model.head_init, "length_features": cfg.model.length_features,
                  "fit": qualname(train.fit_length_head), "features": list(data.HEAD_FEATURE_NAMES),
                  "clip_sd": HEAD_FEATURE_CLIP,
                  "hidden_state_weights": "random" if cfg.model.head_init == "random" else "zero",
                  "tta": True},
    }
