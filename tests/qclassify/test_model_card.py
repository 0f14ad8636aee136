"""`qclassify evaluate` writes RUN/model-card.md from the run's own files."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import pytest

pytest.importorskip("torch")

from qclassify.inference import evaluate_run  # noqa: E402
from qclassify.modelcard import MODEL_CARD_FILE, model_card  # noqa: E402


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    """(evaluated copy of the trained run, data folder)."""
    run, data = trained_run
    copy = tmp_path_factory.mktemp("card") / "run"
    shutil.copytree(run, copy)
    evaluate_run(copy, data, n_bootstrap=20, device="cpu")
    return copy, data


def test_card_holds_the_numbers_of_metrics_and_config(evaluated):
    """Contract: the card shows every metric with its CI from metrics.json, every option of
    config.json (iterated, so later options appear too), counts per class and split, the
    decision rule, the limitations and a reproduce command."""
    run, _ = evaluated
    card = (run / MODEL_CARD_FILE).read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        assert f"| {name} | {metrics[name]['value']:.4f} |" in card
        if metrics[name]["ci95"] is not None:
            low, high = metrics[name]["ci95"]
            assert f"[{low:.4f}, {high:.4f}]" in card
    for option, value in config["options"].items():
        assert f"| `{option}` | `{value}` |" in card
    counts = config["class_counts"]
    assert (f"| stenosis | {counts['train']['stenosis']} | {counts['val']['stenosis']} | "
            f"{counts['test']['stenosis']} | 0 |") in card
    assert f"On {metrics['n_test']} original test images" in card
    assert "argmax" in card and "not validated for clinical use" in card
    assert "qclassify fit data --out run --model qmobilenet" in card
    assert "--bootstrap 20" in card


def test_card_names_no_absolute_path(evaluated, tmp_path):
    """Contract: no absolute path of the machine (the run and data folders, a --weights file)
    appears; they are named by their last component."""
    run, data = evaluated
    config = json.loads((run / "config.json").read_text())
    config["options"]["weights"] = str(tmp_path / "secret" / "init.pt")
    (run / "config.json").write_text(json.dumps(config))
    card = model_card(run, data)
    assert str(tmp_path) not in card and str(run.parent) not in card
    assert str(data.parent) not in card
    assert "--weights init.pt" in card


def test_card_records_the_diffaug_manifest_and_groups(evaluated, tmp_path):
    """Contract: a data folder with a diffaug manifest is named with the manifest's sha256,
    and a split.csv `group` column gives the number of groups per split."""
    run, data = evaluated
    balanced = tmp_path / "balanced"
    shutil.copytree(data, balanced)
    manifest = balanced / "diffaug-manifest.csv"
    manifest.write_text("path,source,class,split,t,gamma,seed,sha256\n")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with (copy / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (copy / "split.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "group"])
        writer.writeheader()
        writer.writerows({**row, "group": f"p{i % 3}"} for i, row in enumerate(rows))
    card = model_card(copy, balanced)
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() in card
    assert "Groups (split.csv `group` column" in card
