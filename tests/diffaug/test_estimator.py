"""DiffusionAugmentor as a scikit-learn estimator and imbalanced-learn sampler.

The conventions are checked without scikit-learn first (diffaug does not depend on it); then,
where scikit-learn and imbalanced-learn are installed, against them: ``clone``, an imblearn
``Pipeline`` with a classifier, the sampling strategies of ``RandomOverSampler`` (reference
implementation), and the estimator checks that apply to a sampler of images.

Checks that do not apply (they fit on tabular 2-D ``X`` from ``make_blobs``/``make_classification``,
or read ``__sklearn_tags__``, which would need scikit-learn imported): scikit-learn's
check_estimators_overwrite_params, check_dont_overwrite_parameters, check_fit_idempotent,
check_estimators_pickle, check_dict_unchanged, check_n_features_in, check_fit2d_*,
check_estimators_dtypes, check_estimators_nan_inf, check_valid_tag_types (image versions of the
first five are below); imbalanced-learn's check_samplers_fit, check_samplers_one_label,
check_target_type, check_samplers_sparse, check_samplers_pandas*, check_samplers_string,
check_samplers_nan (tabular X), check_samplers_2d_target and check_samplers_multiclass_ova
(y must be (N,) labels), check_samplers_sample_indices (tags).
"""

from __future__ import annotations

import pickle
import warnings
from decimal import Decimal

import numpy as np
import pytest
from diffaug import DiffusionAugmentor, NoiseSchedule

SKLEARN_CHECKS_THAT_APPLY = [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible",
    "check_get_params_invariance", "check_set_params", "check_estimator_repr",
    "check_estimator_cloneable", "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order", "check_estimator_tags_renamed",
]
#: Run with imbalanced-learn's sample_dataset_generator returning images instead of a table.
IMBLEARN_CHECKS_ON_IMAGES = ["check_samplers_list", "check_samplers_preserve_dtype"]


def _images(counts: dict[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float images in [0, 1], (N, 6, 6), with ``counts[label]`` images per label."""
    y = np.repeat(list(counts), list(counts.values()))
    return np.random.default_rng(seed).uniform(0, 1, (len(y), 6, 6)), y


def test_constructor_stores_every_parameter_unchanged():
    """Contract (scikit-learn): __init__ stores each argument as is and validates nothing, so
    clone and set_params work; validation waits for use."""
    schedule, brightness = NoiseSchedule.linear(), [0.5, 2.0]
    params = {"sampling_strategy": {1: 3}, "random_state": np.random.default_rng(0),
              "schedule": schedule, "blur_sigma": -1.0, "brightness": brightness,
              "channel_axis": 0, "intensity_range": (0, 4095)}
    augmentor = DiffusionAugmentor(**params)
    for name, value in params.items():
        assert augmentor.get_params()[name] is value
    with pytest.raises(ValueError, match="blur_sigma"):
        augmentor.validate_params()


def test_get_params_set_params_and_repr():
    """Contract: parameters in sorted order, set_params returns self and refuses unknown
    names, and the repr lists the changed parameters only."""
    augmentor = DiffusionAugmentor(sampling_strategy=0.7, random_state=0)
    assert list(augmentor.get_params()) == sorted(augmentor.get_params())
    assert repr(augmentor) == "DiffusionAugmentor(random_state=0, sampling_strategy=0.7)"
    assert repr(DiffusionAugmentor()) == "DiffusionAugmentor()"
    assert augmentor.set_params(blur_sigma=1.0) is augmentor and augmentor.blur_sigma == 1.0
    with pytest.raises(ValueError, match="invalid parameter 'sigma'"):
        augmentor.set_params(sigma=1.0)


def test_pickled_augmenter_draws_like_the_original():
    """Contract: the augmenter pickles (spawned workers, joblib), generator state included."""
    augmentor = DiffusionAugmentor(random_state=0)
    image = _images({0: 1})[0][0]
    copy = pickle.loads(pickle.dumps(augmentor))
    np.testing.assert_array_equal(copy(image), augmentor(image))


@pytest.mark.parametrize(("sampling_strategy", "expected"), [
    (0.7, {0: 0, 1: 10, 2: 15}),  # eq. 3: ceil(0.7 * 28) = 20 (imbalanced-learn: 19)
    (Decimal("0.5"), {0: 0, 1: 4, 2: 9}),
    ("auto", {0: 0, 1: 18, 2: 23}),
    ("not majority", {0: 0, 1: 18, 2: 23}),
    ("all", {0: 0, 1: 18, 2: 23}),
    ("minority", {0: 0, 1: 0, 2: 23}),
    ("not minority", {0: 0, 1: 18, 2: 0}),
    ({2: 9, 1: 10}, {0: 0, 1: 0, 2: 4}),
])
def test_sampling_strategies(sampling_strategy, expected):
    """Analytic oracle: hand-computed counts for 28/10/5 images per class."""
    X, y = _images({0: 28, 1: 10, 2: 5})
    augmentor = DiffusionAugmentor(sampling_strategy=sampling_strategy, random_state=0)
    X_res, y_res = augmentor.fit_resample(X, y)
    assert augmentor.sampling_strategy_ == expected
    assert np.bincount(y_res).tolist() == [28 + expected[0], 10 + expected[1], 5 + expected[2]]
    assert augmentor.fit(X, y) is augmentor and augmentor.sampling_strategy_ == expected


@pytest.mark.parametrize(("sampling_strategy", "message"), [
    ({1: 5}, r"sampling_strategy\[1\] = 5 is below the 10 images"),
    ({7: 40}, r"classes that are not in y: \[7\]"),
    ({1: 12.5}, "integer target count"),
    ("majority", "one of 'auto'"),
    (1.5, r"sampling_strategy must be a number in \(0, 1\]"),
    (None, r"sampling_strategy must be a number in \(0, 1\]"),
])
def test_bad_sampling_strategies_are_refused(sampling_strategy, message):
    """Contract: a strategy that cannot be met raises a ValueError naming it."""
    X, y = _images({0: 28, 1: 10})
    with pytest.raises(ValueError, match=message):
        DiffusionAugmentor(sampling_strategy=sampling_strategy).fit_resample(X, y)


def test_continuous_targets_are_refused():
    """Failure guarded (imbalanced-learn's check_target_type): float y with fractions would be
    one class per sample, i.e. nothing to balance; it raises instead."""
    X, _ = _images({0: 4})
    with pytest.raises(ValueError, match="class labels"):
        DiffusionAugmentor().fit(X, np.linspace(0, 1, 4))


def test_fit_changes_only_fitted_attributes():
    """Contract (image version of scikit-learn's check_dont_overwrite_parameters and
    check_estimators_overwrite_params): fitting adds attributes ending in "_" only and leaves
    every parameter the same object."""
    augmentor = DiffusionAugmentor(sampling_strategy={1: 28}, random_state=0)
    params, public = augmentor.get_params(), dict(vars(augmentor))
    augmentor.fit_resample(*_images({0: 28, 1: 10}))
    assert all(augmentor.get_params()[name] is value for name, value in params.items())
    added = {name for name in vars(augmentor) if name not in public and not name.startswith("_")}
    assert added == {"sampling_strategy_", "sample_indices_"}


@pytest.mark.parametrize(("old", "new"), [("seed", "random_state"),
                                          ("ratio", "sampling_strategy")])
def test_deprecated_aliases_warn_and_still_work(old, new):
    """Contract: seed= and ratio= keep working for one release, with a DeprecationWarning."""
    X, y = _images({0: 8, 1: 2})
    params = {"random_state": 3, "sampling_strategy": 0.5}
    old_params = {name: value for name, value in params.items() if name != new}
    with pytest.warns(DeprecationWarning, match=rf"\({old}=\.\.\.\) is deprecated"):
        augmentor = DiffusionAugmentor(**old_params, **{old: params[new]})
    for actual, expected in zip(augmentor.fit_resample(X, y),
                                DiffusionAugmentor(**params).fit_resample(X, y), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_fit_resample_ratio_keyword_is_deprecated():
    """Contract: fit_resample(X, y, ratio=...) (the old call shape) warns and still works;
    with a sampling_strategy also set, it refuses to guess."""
    X, y = _images({0: 8, 1: 2})
    with pytest.warns(DeprecationWarning, match=r"fit_resample\(X, y, ratio=...\)"):
        X_old, _ = DiffusionAugmentor(random_state=0).fit_resample(X, y, ratio=0.5)
    X_new, _ = DiffusionAugmentor(random_state=0, sampling_strategy=0.5).fit_resample(X, y)
    np.testing.assert_array_equal(X_old, X_new)
    with pytest.raises(ValueError, match="pass sampling_strategy only"), \
            pytest.warns(DeprecationWarning):
        DiffusionAugmentor(sampling_strategy=0.7).fit_resample(X, y, ratio=0.5)


def test_alias_and_new_name_together_are_refused():
    """Contract: seed= with random_state= is ambiguous and raises at use."""
    with pytest.warns(DeprecationWarning):
        augmentor = DiffusionAugmentor(seed=1, random_state=2)
    with pytest.raises(ValueError, match="pass random_state only: seed is its deprecated"):
        augmentor.validate_params()


@pytest.mark.parametrize("random_state", [-1, 1.5, True, "0", np.random.RandomState(0)])
def test_bad_random_state_is_refused(random_state):
    """Contract: random_state is an int >= 0, a numpy Generator or None."""
    with pytest.raises(ValueError, match="random_state must be a non-negative integer seed"):
        DiffusionAugmentor(random_state=random_state).validate_params()


def _flatten(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def test_clone_gives_an_unfitted_equal_augmenter():
    """Reference implementation: sklearn.base.clone copies the parameters (the same objects),
    not the fitted state, and the clone draws like the original."""
    clone = pytest.importorskip("sklearn.base").clone
    augmentor = DiffusionAugmentor(sampling_strategy=0.7, random_state=0, brightness=(0.8, 1.2))
    X, y = _images({0: 28, 1: 10})
    X_res, _ = augmentor.fit_resample(X, y)
    copy = clone(augmentor)
    assert not hasattr(copy, "sampling_strategy_") and repr(copy) == repr(augmentor)
    np.testing.assert_array_equal(copy.fit_resample(X, y)[0], X_res)


def test_imblearn_pipeline_resamples_at_fit_only():
    """Reference implementation: in imblearn's make_pipeline with a FunctionTransformer and a
    LogisticRegression, the augmenter resamples the training images (eq. 3) and is skipped at
    predict; the pipeline also survives clone and cross-validation."""
    pytest.importorskip("imblearn")
    from imblearn.pipeline import make_pipeline
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import FunctionTransformer

    X, y = _images({0: 28, 1: 10})
    pipeline = make_pipeline(DiffusionAugmentor(sampling_strategy=0.7, random_state=0),
                             FunctionTransformer(_flatten), LogisticRegression())
    pipeline.fit(X, y)
    assert pipeline[0].sampling_strategy_ == {0: 0, 1: 10}
    assert pipeline.predict(X).shape == (38,)
    assert len(cross_val_score(clone(pipeline), X, y, cv=2)) == 2


@pytest.mark.parametrize("strategy", ["auto", "minority", "not minority", "all",
                                      {1: 20, 2: 11}])
def test_strategies_match_random_over_sampler(strategy):
    """Reference implementation: for every non-float strategy the counts added per class equal
    imbalanced-learn's RandomOverSampler's (floats differ by eq. 3's ceil, see diffaug.plan)."""
    pytest.importorskip("imblearn")
    from imblearn.over_sampling import RandomOverSampler

    X, y = _images({0: 28, 1: 10, 2: 5})
    reference = RandomOverSampler(sampling_strategy=strategy, random_state=0)
    reference.fit_resample(_flatten(X), y)
    augmentor = DiffusionAugmentor(sampling_strategy=strategy, random_state=0).fit(X, y)
    assert {label: count for label, count in augmentor.sampling_strategy_.items() if count} \
        == {label: count for label, count in reference.sampling_strategy_.items() if count}


def test_float_ratio_rounds_up_where_imblearn_truncates():
    """Reference implementation, documented difference: 28 vs 10 at 0.7 gives a minority of 20
    (eq. 3's ceil of 19.6); RandomOverSampler gives 19."""
    pytest.importorskip("imblearn")
    from imblearn.over_sampling import RandomOverSampler

    X, y = _images({0: 28, 1: 10})
    reference = RandomOverSampler(sampling_strategy=0.7, random_state=0)
    _, y_reference = reference.fit_resample(_flatten(X), y)
    _, y_res = DiffusionAugmentor(sampling_strategy=0.7, random_state=0).fit_resample(X, y)
    assert np.bincount(y_res).tolist() == [28, 20]
    assert np.bincount(y_reference).tolist() == [28, 19]


@pytest.mark.parametrize("check_name", SKLEARN_CHECKS_THAT_APPLY)
def test_sklearn_estimator_checks(check_name):
    """Reference implementation: scikit-learn's own estimator checks that do not fit on
    tabular data (see the module docstring for those that do not apply)."""
    checks = pytest.importorskip("sklearn.utils.estimator_checks")
    with warnings.catch_warnings():
        # check_do_not_raise_errors_in_init_or_set_params passes every parameter, seed= too
        warnings.simplefilter("ignore", DeprecationWarning)
        getattr(checks, check_name)("DiffusionAugmentor", DiffusionAugmentor(random_state=0))


@pytest.mark.parametrize("check_name", IMBLEARN_CHECKS_ON_IMAGES)
def test_imblearn_sampler_checks_on_images(check_name, monkeypatch):
    """Reference implementation: imbalanced-learn's sampler checks, run on its imbalanced
    3-class dataset shape but with (N, 6, 6) images in place of its table."""
    pytest.importorskip("imblearn")
    from imblearn.utils import estimator_checks

    monkeypatch.setattr(estimator_checks, "sample_dataset_generator",
                        lambda: _images({0: 20, 1: 40, 2: 140}))
    getattr(estimator_checks, check_name)("DiffusionAugmentor", DiffusionAugmentor(random_state=0))
