"""Binary classification metrics and threshold choice (numpy + scikit-learn)."""

from __future__ import annotations

import numpy as np


def choose_threshold(labels: np.ndarray, probs: np.ndarray, target_sensitivity: float | None = None) -> float:
    """Threshold from validation data: Youden's J, or the highest one reaching ``target_sensitivity``."""
    from sklearn.metrics import roc_curve

    if len(set(np.asarray(labels).tolist())) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # sklearn puts +inf first
    if target_sensitivity is not None:
        ok = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[ok[0]]) if ok.size else 0.0
    return float(thresholds[int(np.argmax(tpr - fpr))])


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Accuracy, AUC, precision, recall, F1, specificity and the confusion matrix at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = len(set(labels.tolist())) == 2
    return {
        "n": int(labels.size),
        "accuracy": round((tp + tn) / max(1, labels.size), 4),
        "auc": round(float(roc_auc_score(labels, probs)), 4) if both else None,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "specificity": round(tn / (tn + fp), 4) if tn + fp else 0.0,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "threshold": round(float(threshold), 6),
    }
