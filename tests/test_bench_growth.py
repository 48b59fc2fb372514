"""The growth benchmark's own logic: the bodies it sends and how it judges a curve."""

from __future__ import annotations

import json

import pytest

from bench._growth import Curve, Series, judge, post_body, sized_trigger
from tower_trio._serialization import dump_trigger, trigger_from_wire


def _curve(xs: tuple[float, ...], costs: tuple[float, ...], **extra: object) -> Curve:
    return Curve(
        key="k",
        title="t",
        x_label="x",
        xs=xs,
        x_texts=tuple(str(x) for x in xs),
        series=(Series("cost", costs),),
        panels=((0,),),
        cost=0,
        method="m",
        **extra,  # type: ignore[arg-type]
    )


class TestBodies:
    @pytest.mark.parametrize("size", [250, 4096, 65536, 524288])
    def test_post_body_is_a_valid_trigger_of_that_size(self, size: int) -> None:
        """A POST body has exactly the size asked for, and the tower takes it as a trigger."""
        body = post_body(size)
        assert len(body) == size
        trigger = trigger_from_wire(json.loads(body), source="http")
        assert trigger.api_version == "OT-2/v1alpha1"

    @pytest.mark.parametrize("size", [4096, 65536])
    def test_sized_trigger_publishes_that_many_bytes(self, size: int) -> None:
        """Each trigger made has its own uuid and a published body of exactly the size."""
        make = sized_trigger(size)
        first, second = make(), make()
        assert first.uuid != second.uuid
        assert len(dump_trigger(first)) == size


class TestJudge:
    def test_a_cost_proportional_to_x_is_linear(self) -> None:
        """cost = 3x reads as linear, slope 1."""
        verdict = judge([(10, 30), (100, 300), (1000, 3000)], "all")
        assert verdict.growth == "linear"
        assert verdict.slope == pytest.approx(1.0)

    def test_a_quadratic_cost_is_worse_than_linear(self) -> None:
        """cost = x² reads as worse than linear."""
        verdict = judge([(10, 100), (100, 10_000), (1000, 1_000_000)], "all")
        assert verdict.growth == "worse than linear"
        assert verdict.worse_than_linear

    def test_a_constant_cost_is_flat(self) -> None:
        """A cost that moves by a few percent over two decades is flat."""
        assert judge([(10, 2.0), (100, 2.1), (1000, 2.05)], "all").growth == "flat"

    def test_a_fixed_cost_makes_growth_sub_linear(self) -> None:
        """cost = 100 + x: sub-linear over all points, though the last step is linear."""
        verdict = judge([(1, 101), (10, 110), (1000, 1100), (100_000, 100_100)], "all")
        assert verdict.growth == "sub-linear"
        assert verdict.tail_growth == "linear"
        assert not verdict.worse_than_linear

    def test_one_noisy_last_step_does_not_make_a_curve_worse_than_linear(self) -> None:
        """The verdict is the fit over all points; a steep last step alone is only shown."""
        verdict = judge([(10, 3.0), (100, 17.0), (1000, 264.0)], "all")
        assert verdict.tail is not None
        assert verdict.tail > 1.15
        assert verdict.growth == "linear"
        assert "last step alone 1.19" in verdict.text()

    def test_one_point_is_not_judged(self) -> None:
        """With a single usable point there is no slope to fit."""
        verdict = judge([(10, 1.0), (100, 0.0)], "all")
        assert verdict.slope is None
        assert verdict.growth.startswith("not judged")


class TestCurve:
    def test_a_bound_splits_the_verdict(self) -> None:
        """Linear below a cap, flat past it: two verdicts, one each side."""
        curve = _curve(
            (1000, 2000, 4000, 8000, 16000), (4, 8, 16, 16, 16), bound=4000.0, bound_label="cap"
        )
        below, above = curve.verdicts()
        assert below.growth == "linear"
        assert above.growth == "flat"

    def test_origin_is_taken_from_x(self) -> None:
        """Growth is judged from the baseline's x: cost = x - 200 is linear from there."""
        curve = _curve((400, 1200, 10200), (200, 1000, 10000), origin=200.0)
        (verdict,) = curve.verdicts()
        assert verdict.slope == pytest.approx(1.0)
