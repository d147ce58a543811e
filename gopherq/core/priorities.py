"""The order in which a worker takes the priority levels' ready lists, batch by batch (strict or weighted)."""

from __future__ import annotations

import random

#: Level -> the letter claim.lua knows it by.
LETTERS = {"high": "h", "default": "d", "low": "l"}
STRICT = "hdl"


class LevelOrder:
    """`strict`: always high, then default, then low. `weighted`: each batch starts with a level drawn with
    probability proportional to its weight, then takes the others most urgent first; so under a full backlog of
    every level, each gets a share of the batches in proportion to its weight and none is starved."""

    def __init__(self, mode: str, weights: dict[str, int]) -> None:
        self.weighted = mode == "weighted"
        self._levels = [level for level in LETTERS if weights.get(level, 0) > 0]
        self._weights = [weights[level] for level in self._levels]

    def next(self) -> str:
        if not self.weighted:
            return STRICT
        first = LETTERS[random.choices(self._levels, self._weights)[0]]
        return first + STRICT.replace(first, "")
