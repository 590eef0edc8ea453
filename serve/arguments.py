"""Command-line argument types shared by ``python -m serve`` and ``python -m demo``: a bad value is an argparse
usage error naming the flag (exit status 2), never a traceback."""

from __future__ import annotations

import argparse
import math

from core.bundle import PRECISIONS


def bounded(kind, low: float, high: float = math.inf, what: str = "an integer"):
    """An argparse type: a finite number of this kind between low and high (a usage error otherwise)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and low <= value <= high):
            upper = "" if high == math.inf else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be {what} >= {low:g}{upper}, got {text}")
        return value

    return parse


POSITIVE = bounded(int, 1)
NON_NEGATIVE_NUMBER = bounded(float, 0, what="a finite number")
POSITIVE_NUMBER = bounded(float, 0.001, what="a finite number")
PORT = bounded(int, 0, 65535, what="a TCP port number")


def add_precision(parser: argparse.ArgumentParser) -> None:
    """The ``--precision`` flag of every command that loads bundles (``serve.Translator``'s ``precision``)."""
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="int8: the bundle's row-wise int8 graphs, faster, the same output alone or batched "
                             "(default float32)")
