"""infra.faults: the one switch behind every package's test-only fault plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.faults import FaultSlot, first_time
from ingest.pipeline import _faults as ingest_faults
from training.mil import _faults as train_faults


def test_slot_is_off_outside_injected_and_restores_the_outer_plan() -> None:
    slot: FaultSlot[str] = FaultSlot()
    assert slot.active() is None
    with slot.injected("outer"):
        with slot.injected("inner"):
            assert slot.active() == "inner"
        assert slot.active() == "outer"
    assert slot.active() is None


def test_packages_have_separate_slots() -> None:
    with ingest_faults.injected(ingest_faults.FaultPlan(exit_always_slide="x")) as plan:
        assert ingest_faults.active() is plan
        assert train_faults.active() is None


def test_first_time_fires_once_per_marker(tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    assert first_time(marker)
    assert marker.read_text().isdigit()
    assert not first_time(marker)


def test_training_plan_raises_once_with_a_marker(tmp_path: Path) -> None:
    plan = train_faults.FaultPlan(fold="1", epoch=0, mode="raise", once_marker=str(tmp_path / "m"))
    plan.after_epoch("0", 0)  # another fold: nothing
    with pytest.raises(train_faults.InjectedFault):
        plan.after_epoch("1", 0)
    plan.after_epoch("1", 0)  # the marker now exists: a rerun gets past it
