"""The settings of one fair key (weight and limits) and their two spellings: as a user writes them (`5/s`, a glob
pattern) and as the scripts read them (a comma-separated spec, a Lua pattern). Pure data, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

#: Seconds per unit of a rate written as `<n>/<unit>`.
RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*([a-z]+))?\s*\Z")

#: Fewest waiting tasks of a key with an entry in the backlog set (fair_base.lua's FAIR_TOP, the same number): keys
#: with fewer are found in the turns, so that the many keys of a task or two cost that set nothing.
BACKLOG_LISTED = 4

#: Characters with a meaning in a Lua pattern, escaped with % when a glob becomes one.
_LUA_MAGIC = set("^$()%.[]*+-?")


def parse_rate(value: Any) -> float | None:
    """Tasks per second from `5/s`, `300/m`, `10/h`, or a bare number (per second); None or 0 for no limit.
    Raises ValueError with a message that shows the value."""
    if value is None or value == 0 or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"a rate is <number>/<s|m|h> (e.g. 5/s), got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), "s"
    else:
        match = _RATE.match(str(value))
        if not match or (match.group(2) or "s") not in RATE_UNITS:
            raise ValueError(f"a rate is <number>/<s|m|h> (e.g. 5/s), got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or "s"
    if number < 0:
        raise ValueError(f"a rate must not be negative, got {value!r}")
    return number / RATE_UNITS[unit] if number else None


def glob_to_lua(pattern: str) -> str:
    """An anchored Lua pattern that matches what the glob `pattern` matches (`*`: any run, `?`: one character)."""
    out = ["^"]
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in _LUA_MAGIC:
            out.append("%" + char)
        else:
            out.append(char)
    out.append("$")
    return "".join(out)


def glob_match(pattern: str, name: str) -> bool:
    """Whether the glob `pattern` (`*` and `?` only, as the scripts read it: glob_to_lua) matches `name`."""
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern]
    return re.fullmatch("".join(parts), name, re.DOTALL) is not None


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What applies to one fair key: its weight (share of the claims among backlogged keys of its level), and its
    limits, each off when unset: running tasks across all workers, tasks started per second (GCRA, `burst` at
    once), `ordered` (one task in flight, in enqueue order), `paused`."""

    weight: float = 1.0
    concurrency: int = 0
    rate: float | None = None
    burst: int = 1
    ordered: bool = False
    paused: bool = False

    def spec(self) -> str:
        """The scripts' spelling (fair_base.lua): "weight,concurrency,rate,burst,ordered,paused"."""
        return ",".join(
            [
                _number(self.weight),
                str(self.concurrency) if self.concurrency else "",
                _number(self.rate) if self.rate else "",
                str(self.burst) if self.burst != 1 else "",
                "1" if self.ordered else "",
                "1" if self.paused else "",
            ]
        )

    @classmethod
    def from_spec(cls, spec: str) -> KeyLimits:
        """Read a spec written by `spec()` (a field left empty takes its default; a bad field is ignored)."""
        parts = (spec.split(",") + [""] * 6)[:6]
        return cls(
            weight=_float(parts[0]) or 1.0,
            concurrency=int(_float(parts[1]) or 0),
            rate=_float(parts[2]) or None,
            burst=max(1, int(_float(parts[3]) or 1)),
            ordered=parts[4] == "1",
            paused=parts[5] == "1",
        )

    def changed(self, **changes: Any) -> KeyLimits:
        """A copy with the given fields set (None: left as it is)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "concurrency": self.concurrency or None,
            "rate": self.rate,
            "burst": self.burst,
            "ordered": self.ordered,
            "paused": self.paused,
        }


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _float(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
