"""infra.validate: each check returns its value or raises one ConfigError form, and the
configs built on it speak that form."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest

from infra.errors import ConfigError
from infra.validate import (
    at_least,
    choice,
    choices,
    fail,
    fraction,
    in_range,
    integer,
    non_empty,
    non_negative,
    number,
    optional,
    positive,
    require,
)

Colour = Literal["red", "green"]
_FORM = re.compile(r"^[\w.+() ]+ must be .+, got .+$")


def _message(call: Callable[[], Any]) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    assert isinstance(info.value, ValueError)  # callers may catch the builtin
    message = str(info.value)
    assert _FORM.match(message) and "\n" not in message, message
    return message


@pytest.mark.parametrize("value", [1, 0.5, np.float32(2.0), np.int64(3)])
def test_checks_return_the_value_unchanged(value: Any) -> None:
    for check in (number, positive, non_negative):
        assert check("X.v", value) is value
    assert at_least("X.v", value, 0.5) is value
    assert in_range("X.v", value, 0, 3) is value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1", None, [1]])
def test_numbers_must_be_finite_reals_and_not_bools(bad: Any) -> None:
    for check in (number, positive, non_negative):
        assert (
            _message(lambda check=check: check("X.v", bad))
            == f"X.v must be a finite number, got {bad!r}"
        )
    _message(lambda: fraction("X.v", bad))


def test_bounds_are_named_in_the_rule() -> None:
    assert (
        _message(lambda: positive("TilingConfig.target_mpp", 0))
        == "TilingConfig.target_mpp must be > 0, got 0"
    )
    assert _message(lambda: non_negative("X.v", -0.5)) == "X.v must be >= 0, got -0.5"
    assert _message(lambda: at_least("X.n", 1, 2)) == "X.n must be >= 2, got 1"
    assert at_least("X.n", 2, 2) == 2


@pytest.mark.parametrize(
    ("kwargs", "inside", "outside", "rule"),
    [
        ({}, [0, 1], [-0.01, 1.01], "[0, 1]"),
        ({"open_low": True}, [1e-9, 1], [0], "(0, 1]"),
        ({"open_high": True}, [0, 0.999], [1], "[0, 1)"),
        ({"open_low": True, "open_high": True}, [0.5], [0, 1], "(0, 1)"),
    ],
)
def test_fraction_ends(
    kwargs: dict[str, bool], inside: list[float], outside: list[float], rule: str
) -> None:
    for value in inside:
        assert fraction("X.f", value, **kwargs) == value
    for value in outside:
        assert (
            _message(lambda value=value: fraction("X.f", value, **kwargs))
            == f"X.f must be in {rule}, got {value!r}"
        )


def test_in_range_ends() -> None:
    assert in_range("X.g", 255, 0, 255, open_low=True) == 255
    assert (
        _message(lambda: in_range("X.g", 0, 0, 255, open_low=True))
        == "X.g must be in (0, 255], got 0"
    )
    assert (
        _message(lambda: in_range("X.io", 0.5, 1.0, 1024.0))
        == "X.io must be in [1.0, 1024.0], got 0.5"
    )


def test_integer_refuses_floats_and_bools() -> None:
    assert integer("X.i", 7) == 7
    for bad in (7.0, True, "7"):
        assert (
            _message(lambda bad=bad: integer("X.i", bad)) == f"X.i must be an integer, got {bad!r}"
        )


def test_choice_from_a_literal_or_a_tuple() -> None:
    assert choice("X.c", "red", Colour) == "red"
    assert choice("X.c", 2, (1, 2)) == 2
    assert (
        _message(lambda: choice("X.c", "blue", Colour))
        == "X.c must be one of 'red', 'green', got 'blue'"
    )


def test_choices_name_the_unknown_members() -> None:
    assert choices("X.cs", ["green", "red"], Colour) == ("green", "red")
    assert (
        _message(lambda: choices("X.cs", ["red", "blue"], Colour))
        == "X.cs must be made of 'red', 'green', got 'blue'"
    )
    assert _message(lambda: choices("X.cs", ["pink", "blue"], Colour)).endswith(
        "got ['pink', 'blue']"
    )


def test_non_empty_and_optional() -> None:
    assert non_empty("X.s", "a") == "a"
    for bad in ("", (), None):
        assert (
            _message(lambda bad=bad: non_empty("X.s", bad)) == f"X.s must be non-empty, got {bad!r}"
        )
    assert optional(positive, "X.t", None) is None
    assert optional(at_least, "X.t", 3, 1) == 3
    assert _message(lambda: optional(at_least, "X.t", 0, 1)) == "X.t must be >= 1, got 0"


def test_require_fail_and_long_values() -> None:
    require(True, "X.a + b", "< 1", 0.5)
    assert _message(lambda: require(False, "X.a + b", "< 1", 1.2)) == "X.a + b must be < 1, got 1.2"
    message = _message(lambda: require(False, "X.s", "short", "y" * 500))
    assert len(message) < 120 and message.endswith("...")
    hidden = fail("X.v", "one line", "secret\ntext", shown="a text of 11 chars")
    assert str(hidden) == "X.v must be one line, got a text of 11 chars"


def _bad_configs() -> list[tuple[Callable[[], Any], str]]:
    from features.store.sandbox import SqlLimits
    from features.store.schema import SlideInfo
    from features.store.vectors import SearchParams, VectorIndexConfig
    from ingest.stain.augment import HEDJitter
    from ingest.stain.params import StainParams
    from ingest.tiling.config import TilingConfig
    from ingest.tissue.config import TissueConfig
    from ingest.tissue.qc import TileQCConfig
    from training.cohorts.config import CohortConfig, SplitConfig
    from training.omics.config import LabelConfig, ScoreConfig

    return [
        (lambda: TissueConfig(min_od=0), "TissueConfig.min_od must be > 0, got 0"),
        (
            lambda: TissueConfig(pen_inks=("blue", "purple")),
            "TissueConfig.pen_inks must be made of 'blue', 'green', 'black', 'red', got 'purple'",
        ),
        (
            lambda: TileQCConfig(max_pen_fraction=1.5),
            "TileQCConfig.max_pen_fraction must be in [0, 1], got 1.5",
        ),
        (lambda: TilingConfig(tile_size=4), "TilingConfig.tile_size must be in [8, 8192], got 4"),
        (
            lambda: TilingConfig(resample="cubic"),  # type: ignore[arg-type]
            "TilingConfig.resample must be one of 'area', 'lanczos', got 'cubic'",
        ),
        (
            lambda: SplitConfig(val_fraction=0.5, test_fraction=0.5),
            "SplitConfig.val_fraction + test_fraction must be < 1 (to leave patients to train on), "
            "got 1.0",
        ),
        (
            lambda: CohortConfig(signatures=("a",), stratify="b"),
            "CohortConfig.stratify must be one of 'a', got 'b'",
        ),
        (
            lambda: LabelConfig(metric="cosine"),
            "LabelConfig.metric must be 'euclidean' for ward linkage, got 'cosine'",
        ),
        (lambda: ScoreConfig(min_fraction=0), "ScoreConfig.min_fraction must be in (0, 1], got 0"),
        (lambda: HEDJitter(bias=3.0), "HEDJitter.bias must be in [0.0, 2.0], got 3.0"),
        (
            lambda: StainParams(
                method="reinhard",
                reference_id="r",
                lab_mean=(1.0, 2.0, 3.0),
                lab_std=(1.0, 0.0, 1.0),
            ),
            "StainParams.lab_std must be 3 positive numbers, got (1.0, 0.0, 1.0)",
        ),
        (
            lambda: SqlLimits(memory_limit="lots"),
            "SqlLimits.memory_limit must be a size like '2GB' or '512MB', got 'lots'",
        ),
        (lambda: SearchParams(k=0), "SearchParams.k must be > 0, got 0"),
        (
            lambda: VectorIndexConfig(metric="manhattan"),  # type: ignore[arg-type]
            "VectorIndexConfig.metric must be one of 'L2', 'cosine', 'dot', got 'manhattan'",
        ),
        (
            lambda: SlideInfo(source_uri="a.svs", vendor="Aperio\nFilename = jane-doe.svs"),
            "SlideInfo.vendor must be a short name (<= 64 chars, one line), "
            "got a free-text description of 30 chars",
        ),
    ]


def test_configs_speak_one_message_form() -> None:
    """A sample across the packages: old wordings ("not", "≥", "unknown inks", two fields
    in one message) fail these exact strings."""
    for build, expected in _bad_configs():
        assert _message(build) == expected
