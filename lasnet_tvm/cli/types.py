"""Click parameter types shared by the commands: ranges that refuse NaN and infinity, granularity and rate
lists checked for their syntax. A bad value is a usage error (exit code 2) naming the option."""

from __future__ import annotations

import math

import click

from ..archs import GRANULARITY_TEXT
from ..block_plan import MaskerPlacement


class FiniteFloat(click.FloatRange):
    """A float in a range (bounds as :class:`click.FloatRange`); NaN and infinity are refused."""

    name = "finite float"

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)  # nan compares false with every bound, so check it here
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


#: An activation rate: a finite number in [0, 1].
RATE = FiniteFloat(0.0, 1.0)
#: A positive finite number (width multipliers, learning rates, temperatures, timeouts).
POSITIVE = FiniteFloat(0.0, min_open=True)
#: A finite number >= 0 (loss weights, tolerances, weight decay).
NON_NEGATIVE = FiniteFloat(0.0)
#: A count of at least one (samples, images, repeats, threads, sizes).
COUNT = click.IntRange(min=1)

#: ``--masker``: a :class:`~lasnet_tvm.block_plan.MaskerPlacement` for every block, or ``auto`` (per block the
#: placement the predictor prices lower)
MASKER = click.Choice([*MaskerPlacement.values(), "auto"])



class Granularity(click.ParamType):
    """S per stage (``4-4-2-1``), one S, or one S per block (``4,4,2,...``): positive integers joined by one
    kind of separator. Whether the count fits the arch is checked where the arch is known."""

    name = "granularity"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not GRANULARITY_TEXT.match(text):
            self.fail(f"{value!r}: expected positive integers joined by '-' (per stage, e.g. 4-4-2-1) or ',' "
                      "(per block)", param, ctx)
        return text


GRANULARITY = Granularity()


class Rates(click.ParamType):
    """One activation rate, or one per block separated by ','; each a finite number in [0, 1]."""

    name = "rates"

    def convert(self, value, param, ctx):
        if isinstance(value, (float, list)):
            return value
        text = str(value)
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            self.fail(f"rate {text!r}: expected a number in [0, 1] or one per block separated by ','", param, ctx)
        for v in values:
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                self.fail(f"activation rate {v} in {text!r} is not a number in [0, 1]", param, ctx)
        return values[0] if len(values) == 1 else values


RATES = Rates()
