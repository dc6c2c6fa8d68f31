"""Training helpers without a model: nested subsets, settings validation, checkpoint selection, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewise.data import Example
from tunewise.errors import TaskSpecError
from tunewise.training.settings import TuneSettings, settings_from_params
from tunewise.training.subsets import describe_subset, subset_hash, training_subset
from tunewise.training.trainer import _last_complete_checkpoint, _plan, _warnings


def _examples(per_label: int = 20, labels: str = "abcd") -> list[Example]:
    return [Example(id=f"{lab}{i}", text=f"{lab} text {i}", target=lab) for lab in labels for i in range(per_label)]


def test_per_label_subsets_are_nested_and_balanced():
    train = _examples()
    small = training_subset(train, per_label=3, seed=1)
    large = training_subset(train, per_label=8, seed=1)
    assert len(small) == 12 and len(large) == 32
    assert {e.id for e in small} <= {e.id for e in large}
    assert describe_subset(small)["min_per_label"] == describe_subset(small)["max_per_label"] == 3
    # another seed draws other examples; the input order does not matter
    assert {e.id for e in training_subset(train, per_label=3, seed=2)} != {e.id for e in small}
    assert subset_hash(training_subset(list(reversed(train)), per_label=3, seed=1)) == subset_hash(small)


def test_fraction_and_limit_subsets():
    train = _examples()
    quarter = training_subset(train, fraction=0.25, seed=0)
    half = training_subset(train, fraction=0.5, seed=0)
    assert len(quarter) == 20 and {e.id for e in quarter} <= {e.id for e in half}
    capped = training_subset(train, limit=8, seed=0)
    assert len(capped) == 8 and describe_subset(capped)["min_per_label"] == 2  # round-robin keeps balance
    assert len(training_subset(train, seed=0)) == len(train)


def test_settings_errors_name_the_rung_and_key():
    with pytest.raises(TaskSpecError, match="rung 'x': rank: unknown parameter"):
        settings_from_params("x", {"rank": 8})
    with pytest.raises(TaskSpecError, match="rung 'x': .*per_label or fraction"):
        settings_from_params("x", {"per_label": 5, "fraction": 0.5})
    with pytest.raises(TaskSpecError, match="classifier head"):
        settings_from_params("x", {"method": "full", "head": "classifier"})


def test_identity_ignores_budget_and_price_but_not_training_choices():
    a = TuneSettings(per_label=10)
    assert a.identity_hash() == TuneSettings(per_label=10, device_hour_usd=3.0, save_every=7).identity_hash()
    assert a.identity_hash() != TuneSettings(per_label=20).identity_hash()
    assert a.identity()["learning_rate"] == 1e-3 and TuneSettings(method="full").lr == 5e-5


def test_default_epochs_shrink_with_data_and_the_plan_saves_on_evaluation_steps():
    s = TuneSettings()
    assert (s.epochs_for(500), s.epochs_for(2000), s.epochs_for(5000)) == (3.0, 2.0, 1.0)
    plan = _plan(TuneSettings(batch_size=16, evals_per_epoch=4, save_every=7), 1600)
    assert plan.steps_per_epoch == 100 and plan.total_steps == 200 and plan.eval_steps == 25
    assert plan.save_steps % plan.eval_steps == 0  # keeping the best checkpoint needs saves on eval steps


def test_last_complete_checkpoint_skips_and_removes_half_written_ones(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    for step, complete in ((5, True), (10, True), (15, False)):
        d = ckpts / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text("{}")
            (d / "optimizer.pt").write_bytes(b"x")
    assert _last_complete_checkpoint(ckpts) == str(ckpts / "checkpoint-10")
    assert not (ckpts / "checkpoint-15").exists()
    assert _last_complete_checkpoint(tmp_path / "missing") is None


def test_overfitting_and_small_data_warnings():
    history = {"train_loss": [[10, 2.0], [20, 1.0], [30, 0.5], [40, 0.2]],
               "dev_loss": [[10, 2.1], [20, 1.2], [30, 1.5], [40, 1.9]]}
    warnings = _warnings(history, 60, ["a"] * 58 + ["b"] * 2)
    assert any("overfits" in w and "1.200" in w for w in warnings)
    assert any("Only 60 training examples" in w for w in warnings)
    assert any("fewer than 5" in w for w in warnings)
    healthy = {"train_loss": [[10, 2.0], [20, 1.0]], "dev_loss": [[10, 2.1], [20, 1.2]]}
    assert _warnings(healthy, 500, ["a"] * 250 + ["b"] * 250) == []
