"""Argument types for the commands' numeric flags: checked where they are parsed.

Every number a flag or a YAML config gives goes through one of these, so that
`--lr inf`, `--warmup nan` or `--num-shards 0` stop at once with the flag's
name, not at the first NaN loss or in a traceback.

    parser.add_argument("--lr", type=number(above=0), default=1e-3)
    parser.add_argument("--seed", type=integer(minimum=0), default=0)
"""

import argparse
import math


def integer(minimum=None):
    """An argparse type: an integer, at least `minimum` (when given)."""

    def parse(text):
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = "integer"  # argparse names the type in "invalid integer value"
    return parse


def number(minimum=None, above=None):
    """An argparse type: a finite number, >= `minimum` or > `above` (when given)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got {text}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"expected a number > {above:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse
