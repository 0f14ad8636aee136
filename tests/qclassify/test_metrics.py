"""Tests of qclassify.metrics (Table 1 metrics, bootstrap CIs) and qclassify.stats (DeLong,
McNemar). Each test names its kind: reference implementation (scikit-learn, scipy, a direct
O(n^2) DeLong), analytic oracle, or same-seed rederivation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from qclassify.metrics import (
    METRIC_NAMES,
    bootstrap_metrics,
    evaluate_predictions,
    percentile_interval,
    point_metrics,
    predict_classes,
    youden_threshold,
)
from qclassify.stats import delong_covariance, delong_test, mcnemar_test
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

ATOL = 1e-12


def make_predictions(n: int, n_classes: int, *, separation: float = 1.2, seed: int = 0,
                     decimals: int | None = None):
    """Noisy softmax scores that favour the true class; `decimals` rounds them to force ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += separation
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:  # rows still sum to 1, as sklearn's multi-class AUC requires
        proba[:, :-1] = np.round(proba[:, :-1], decimals)
        proba[:, -1] = 1 - proba[:, :-1].sum(axis=1)
    return y, proba


def sklearn_metrics(y, proba, positive, threshold=None):
    """Reference: every metric straight from scikit-learn (specificity = recall of negatives);
    predictions are the argmax, or with `threshold` the positive class where its probability
    reaches the threshold."""
    pred = proba.argmax(axis=1)
    if threshold is not None:
        pred = np.where(proba[:, positive] >= threshold, positive, 1 - positive)
    if positive is None:
        labels = np.arange(proba.shape[1])
        kw = {"labels": labels, "average": "macro", "zero_division": 0}
        specificity = np.mean([recall_score(y != k, pred != k, zero_division=0) for k in labels])
        auc = (roc_auc_score(y, proba, multi_class="ovr", average="macro") if len(labels) > 2
               else roc_auc_score(y, proba[:, 1]))
        return {"accuracy": accuracy_score(y, pred), "precision": precision_score(y, pred, **kw),
                "recall": recall_score(y, pred, **kw), "specificity": specificity,
                "f1": f1_score(y, pred, **kw), "auc": auc}
    truth, guess = y == positive, pred == positive
    return {"accuracy": accuracy_score(y, pred),
            "precision": precision_score(truth, guess, zero_division=0),
            "recall": recall_score(truth, guess, zero_division=0),
            "specificity": recall_score(~truth, ~guess, zero_division=0),
            "f1": f1_score(truth, guess, zero_division=0),
            "auc": roc_auc_score(truth, proba[:, positive])}


@pytest.mark.parametrize(("n_classes", "positive"), [(2, 0), (2, 1), (2, None), (3, None), (4, 2)])
def test_point_metrics_match_sklearn(n_classes, positive):
    """Reference implementation: scikit-learn metrics, binary view and macro view."""
    y, proba = make_predictions(157, n_classes, seed=n_classes)
    ours = point_metrics(y, proba, positive=positive)
    reference = sklearn_metrics(y, proba, positive)
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(reference[name], abs=ATOL), name
    np.testing.assert_array_equal(ours["confusion_matrix"], confusion_matrix(y, proba.argmax(1)))


@pytest.mark.parametrize(("n_classes", "positive", "threshold"),
                         [(2, 1, None), (3, None, None), (3, 0, None), (2, 1, 0.3), (2, 0, 0.62)])
def test_each_bootstrap_resample_matches_sklearn_on_that_resample(n_classes, positive,
                                                                  threshold):
    """Same-seed rederivation + reference: redraw the documented indices, score them with
    scikit-learn; ties in the scores (rounded) exercise the tie handling of the AUC and of the
    decision threshold (scores equal to it count as positive)."""
    y, proba = make_predictions(60, n_classes, seed=7, decimals=2)
    resampled = bootstrap_metrics(y, proba, positive=positive, n_bootstrap=40, seed=3,
                                  threshold=threshold)
    indices = np.random.default_rng(3).integers(0, len(y), size=(40, len(y)))
    for b in range(0, 40, 7):
        reference = sklearn_metrics(y[indices[b]], proba[indices[b]], positive, threshold)
        for name in METRIC_NAMES:
            assert resampled[name][b] == pytest.approx(reference[name], abs=1e-9), (name, b)


@pytest.mark.parametrize(("positive", "decimals"), [(1, None), (0, None), (1, 2)])
def test_point_metrics_with_a_threshold_match_sklearn(positive, decimals):
    """Reference implementation: scikit-learn on the thresholded predictions; the threshold
    moves the confusion matrix but never the AUC."""
    y, proba = make_predictions(157, 2, seed=4, decimals=decimals)
    threshold = float(np.quantile(proba[:, positive], 0.6))
    ours = point_metrics(y, proba, positive=positive, threshold=threshold)
    reference = sklearn_metrics(y, proba, positive, threshold)
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(reference[name], abs=ATOL), name
    predicted = predict_classes(proba, positive=positive, threshold=threshold)
    np.testing.assert_array_equal(ours["confusion_matrix"], confusion_matrix(y, predicted))
    assert not np.array_equal(predicted, proba.argmax(1))
    assert ours["auc"] == point_metrics(y, proba, positive=positive)["auc"]


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2), (2, 1)])
def test_youden_threshold_maximises_balanced_accuracy(seed, decimals):
    """Exhaustive search as the oracle: among every observed score used as a threshold, the
    chosen one reaches scikit-learn's highest balanced accuracy (= (J + 1) / 2), and every
    higher threshold scores lower (ties go to the highest)."""
    y, proba = make_predictions(90, 2, separation=0.8, seed=seed, decimals=decimals)
    truth, score = y == 1, proba[:, 1]
    threshold = youden_threshold(truth, score)

    def balanced(cut):
        return balanced_accuracy_score(truth, score >= cut)

    best = max(balanced(cut) for cut in np.unique(score))
    assert threshold in score
    assert balanced(threshold) == pytest.approx(best, abs=1e-12)
    assert all(balanced(cut) < best - 1e-12 for cut in np.unique(score) if cut > threshold)


@pytest.mark.parametrize("scores", [
    [0.5] * 6,  # a constant model: every threshold gives J = 0
    [0.9, 0.8, 0.7, 0.3, 0.2, 0.1],  # positives scored below every negative: J < 0 except at the ends
])
def test_youden_threshold_is_none_when_nothing_beats_chance(scores):
    """Analytic oracle: when no threshold separates better than chance, sklearn's ROC curve
    still has a first threshold (+inf, J = 0); that degenerate rule is never returned."""
    truth = np.array([False, False, False, True, True, True])
    fpr, tpr, _ = roc_curve(truth, scores)
    assert (tpr - fpr).max() <= 0  # the premise, from sklearn
    assert youden_threshold(truth, np.array(scores)) is None


def test_threshold_needs_two_classes_and_both_labels():
    """Validation: one label only, or a threshold on a three-class task, is refused."""
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(np.ones(5, dtype=bool), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="two classes"):
        predict_classes(np.full((4, 3), 1 / 3), positive=0, threshold=0.5)


def test_bootstrap_marks_undefined_auc_as_nan():
    """Analytic oracle: a resample drawing only one class has no AUC, every other metric is
    defined (zero_division = 0)."""
    y = np.array([0] * 9 + [1])
    proba = np.tile([0.6, 0.4], (10, 1))
    resampled = bootstrap_metrics(y, proba, positive=1, n_bootstrap=200, seed=0)
    indices = np.random.default_rng(0).integers(0, 10, size=(200, 10))
    single_class = (y[indices] == 0).all(axis=1)
    assert single_class.any() and not single_class.all()
    np.testing.assert_array_equal(np.isnan(resampled["auc"]), single_class)
    for name in set(METRIC_NAMES) - {"auc"}:
        assert np.isfinite(resampled[name]).all()


def test_interval_is_null_with_warning_when_too_many_resamples_are_undefined():
    """Analytic oracle: with 10 images and one positive, ~35% of resamples miss the positive."""
    y = np.array([0] * 9 + [1])
    proba = np.tile([0.6, 0.4], (10, 1))
    with pytest.warns(RuntimeWarning, match="auc: undefined in"):
        result = evaluate_predictions(y, proba, ["a", "b"], positive=1, n_bootstrap=200)
    assert result["auc"]["ci95"] is None
    assert result["accuracy"]["ci95"] is not None


def test_percentile_interval_matches_numpy_percentiles():
    """Reference implementation: numpy percentiles of the defined resamples; contract: no
    resamples (--bootstrap 0) means no interval and no warning."""
    samples = np.append(np.linspace(0, 1, 101), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert percentile_interval(samples) == pytest.approx([0.025, 0.975], abs=ATOL)
    assert percentile_interval(np.array([])) is None
    y, proba = make_predictions(30, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_resamples = evaluate_predictions(y, proba, ["a", "b"], positive=1, n_bootstrap=0)
    assert all(no_resamples[name]["ci95"] is None for name in METRIC_NAMES)


@pytest.mark.parametrize(("n_classes", "positive"), [(2, 0), (3, None)])
def test_evaluate_predictions_structure_ci_and_determinism(n_classes, positive):
    """Contract (DESIGN.md metrics.json) + analytic: the CI brackets the point value; the same
    seed gives the same JSON and another seed a different one."""
    y, proba = make_predictions(156, n_classes, seed=11)
    names = [f"class{k}" for k in range(n_classes)]
    result = evaluate_predictions(y, proba, names, positive=positive, n_bootstrap=300, seed=5)
    again = evaluate_predictions(y, proba, names, positive=positive, n_bootstrap=300, seed=5)
    other = evaluate_predictions(y, proba, names, positive=positive, n_bootstrap=300, seed=6)
    text = json.dumps(result, allow_nan=False)
    assert text == json.dumps(again, allow_nan=False) != json.dumps(other, allow_nan=False)
    reference = sklearn_metrics(y, proba, positive)
    for name in METRIC_NAMES:
        low, high = result[name]["ci95"]
        assert result[name]["value"] == pytest.approx(reference[name], abs=ATOL)
        assert low <= result[name]["value"] <= high and high - low > 0
    assert result["confusion_matrix"] == confusion_matrix(y, proba.argmax(1)).tolist()
    assert result["n_test"] == 156 and result["class_names"] == names
    assert result["positive_class"] == (None if positive is None else names[positive])
    assert set(result["roc"]) == ({names[positive]} if positive is not None else set(names))
    curve = next(iter(result["roc"].values()))
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and curve["thresholds"][0] is None
    assert result["decision_threshold"] is None


@pytest.mark.parametrize("bad", [
    {"y_true": np.array([0, 1, 2]), "proba": np.full((3, 2), 0.5)},
    {"y_true": np.array([0, 1]), "proba": np.full((3, 2), 0.5)},
    {"y_true": np.array([0.0, 1.0]), "proba": np.full((2, 2), 0.5)},
    {"y_true": np.array([0, 1]), "proba": np.full((2, 2), 0.5), "positive": 2},
])
def test_bad_input_is_a_clear_value_error(bad):
    """Contract: invalid labels/probabilities/positive class raise ValueError naming the input."""
    with pytest.raises(ValueError, match="y_true|proba|positive"):
        evaluate_predictions(bad["y_true"], bad["proba"], ["a", "b"],
                             positive=bad.get("positive", 0), n_bootstrap=10)


def direct_delong(is_positive, scores):
    """DeLong et al. (1988) by definition: placement values from every positive/negative pair."""
    aucs, v10, v01 = [], [], []
    for s in scores:
        x, y = s[is_positive], s[~is_positive]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = is_positive.sum(), (~is_positive).sum()
    return np.array(aucs), np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n


def test_fast_delong_matches_direct_computation_and_sklearn():
    """Reference implementations: O(n^2) placement values, and sklearn's roc_auc_score."""
    rng = np.random.default_rng(2)
    is_positive = rng.random(90) < 0.4
    base = is_positive + rng.normal(size=90)
    scores = np.round(np.vstack([base + 0.5 * rng.normal(size=90), base, rng.normal(size=90)]), 1)
    aucs, covariance = delong_covariance(is_positive, scores)
    direct_aucs, direct_covariance = direct_delong(is_positive, scores)
    np.testing.assert_allclose(aucs, direct_aucs, atol=ATOL)
    np.testing.assert_allclose(covariance, direct_covariance, atol=ATOL)
    np.testing.assert_allclose(aucs, [roc_auc_score(is_positive, s) for s in scores], atol=ATOL)


def test_delong_test_statistic():
    """Reference: z from the direct covariance; analytic: identical scores give p = 1, a strong
    against a useless classifier on 200 images gives a tiny p."""
    rng = np.random.default_rng(4)
    is_positive = rng.random(200) < 0.5
    good, useless = is_positive + 0.4 * rng.normal(size=200), rng.normal(size=200)
    result = delong_test(is_positive, good, useless)
    aucs, cov = direct_delong(is_positive, np.vstack([good, useless]))
    expected_z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.z == pytest.approx(expected_z, rel=1e-9)
    assert result.p_value < 1e-6 and result.auc_a > result.auc_b
    assert delong_test(is_positive, good, good).p_value == 1.0


def test_mcnemar_matches_hand_built_table():
    """Reference: the discordant cells of a hand-built 2x2 table through scipy's binomtest.
    Table (a correct?, b correct?): both 50, only a 9, only b 2, neither 5."""
    y = np.zeros(66, dtype=int)
    pred_a = np.r_[np.zeros(50), np.zeros(9), np.ones(2), np.ones(5)].astype(int)
    pred_b = np.r_[np.zeros(50), np.ones(9), np.zeros(2), np.ones(5)].astype(int)
    result = mcnemar_test(y, pred_a, pred_b)
    assert (result.only_a_correct, result.only_b_correct) == (9, 2)
    assert result.p_value == pytest.approx(binomtest(9, 11, 0.5).pvalue, abs=ATOL)
    exact_two_sided = 2 * sum(math.comb(11, k) for k in range(3)) / 2**11
    assert result.p_value == pytest.approx(exact_two_sided, abs=ATOL)
    assert mcnemar_test(y, pred_b, pred_a).p_value == pytest.approx(result.p_value, abs=ATOL)


def test_mcnemar_identical_predictions_give_p_one():
    """Analytic oracle: no discordant pairs, no evidence of a difference."""
    y, proba = make_predictions(50, 3, seed=1)
    pred = proba.argmax(axis=1)
    assert mcnemar_test(y, pred, pred).p_value == 1.0
