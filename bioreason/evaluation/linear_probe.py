"""The one regression every probe fits: standardised features, L2 logistic regression (lbfgs), seeded. Shared so the
encoder probe and the input probe differ only in their features."""

from __future__ import annotations


def make_linear_probe(seed: int = 0):
    """An unfitted scikit-learn pipeline: `StandardScaler` then `LogisticRegression(max_iter=2000)`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


__all__ = ["make_linear_probe"]
