"""Exact arithmetic for the rewards: a pnl window with exact running sums, and a correctly rounded
square root of a ratio of integers.

Floats are dyadic rationals, so sums of p and p^2 kept as integers (in units of the finest
step seen) are exact, and the sample standard deviation needs one rounding only: the same
bits on every platform and in every replica, whatever order the window was filled in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator

__all__ = ["PnlWindow", "sqrt_of_ratio"]

# Bits of the square root before its single rounding to a float: 2 * 53 + 3 (see sqrt_of_ratio).
_SQRT_BITS = 109


def sqrt_of_ratio(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator), correctly rounded (numerator >= 0, denominator > 0).

    An integer square root with at least 54 significant bits, rounded to odd (the lowest
    bit set when anything was cut off), then rounded once to the nearest float: the
    round-to-odd intermediate cannot cause a double rounding.
    """
    shift = (numerator.bit_length() - denominator.bit_length() - _SQRT_BITS) // 2
    if shift >= 0:
        scaled = denominator << 2 * shift
        root = math.isqrt(numerator // scaled)
        root |= root * root * scaled != numerator
        return float(root << shift)
    scaled = numerator << -2 * shift
    root = math.isqrt(scaled // denominator)
    root |= root * root * denominator != scaled
    return root / (1 << -shift)


class PnlWindow:
    """The pnl of the recent trades (newest last, at most `maxlen`) and their exact spread.

    Besides the values it keeps exact integer sums of p and p^2 (in units of 2**-bits, the
    finest step of any value so far; a finite float is a dyadic rational), updated in O(1)
    per trade, so the sample standard deviation is exact before its one rounding.
    """

    __slots__ = ("_bits", "_exact", "_squares", "_sum", "_values")

    def __init__(self, maxlen: int | None, values: Iterable[float] = ()) -> None:
        self._values: deque[float] = deque(maxlen=maxlen)
        self._exact: deque[int] = deque(maxlen=maxlen)
        self._bits = 0
        self._sum = 0
        self._squares = 0
        for value in values:
            self.append(value)

    @property
    def maxlen(self) -> int | None:
        return self._values.maxlen

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    def __getitem__(self, index: int) -> float:
        return self._values[index]

    def append(self, pnl_pct: float) -> None:
        numerator, denominator = pnl_pct.as_integer_ratio()
        bits = denominator.bit_length() - 1
        if bits > self._bits:  # a finer value: rescale everything, exactly
            shift = bits - self._bits
            self._sum <<= shift
            self._squares <<= 2 * shift
            self._exact = deque((e << shift for e in self._exact), maxlen=self._exact.maxlen)
            self._bits = bits
        exact = numerator << (self._bits - bits)
        window = self._exact
        if len(window) == window.maxlen:
            oldest = window[0]
            self._sum -= oldest
            self._squares -= oldest * oldest
        self._sum += exact
        self._squares += exact * exact
        window.append(exact)
        self._values.append(pnl_pct)

    def sample_std(self) -> float:
        """sqrt(sum (p - mean)^2 / (n - 1)) over the window, correctly rounded; 0.0 below two trades.

        With S = sum p and Q = sum p^2 (exact): sum (p - mean)^2 = (n Q - S^2) / n.
        """
        n = len(self._exact)
        if n < 2:
            return 0.0
        return sqrt_of_ratio(n * self._squares - self._sum * self._sum, (n * (n - 1)) << 2 * self._bits)

    def to_list(self) -> list[float]:
        return list(self._values)
