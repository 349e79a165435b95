"""infra.environ.patched_environ: the one environment save/restore."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.environ import patched_environ

SET, UNSET = "SLIDEBANK_TEST_ENV_SET", "SLIDEBANK_TEST_ENV_UNSET"


def test_sets_removes_and_restores_even_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SET, "before")
    monkeypatch.delenv(UNSET, raising=False)
    seen: dict[str, str | None] = {}

    def fail_inside() -> None:
        with patched_environ({SET: None, UNSET: "inside"}):
            seen.update({SET: os.environ.get(SET), UNSET: os.environ.get(UNSET)})
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_inside()
    assert seen == {SET: None, UNSET: "inside"}
    assert os.environ[SET] == "before"
    assert UNSET not in os.environ


def test_children_started_inside_inherit_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    with patched_environ({UNSET: "child-sees-it"}):
        out = subprocess.run(
            [sys.executable, "-c", f"import os; print(os.environ['{UNSET}'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    assert out.strip() == "child-sees-it"
