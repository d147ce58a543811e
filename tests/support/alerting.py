"""The alert rules of docs/operations.md, evaluated on a real scrape: a small evaluator for the part of PromQL those
rules use, so a test can say that a rule fires in its incident (and stays quiet otherwise) without a Prometheus.

Supported: instant selectors with `=` label matchers, number literals, `time()`, `-` between a scalar and a vector,
the comparisons `> < >= <= == !=` (filtering, as PromQL does without `bool`), and `and`/`or` between vectors matched
on their whole label sets (the metric name aside), with parentheses. A rule using anything else (say `increase`,
which needs a range of scrapes) is reported as unsupported. `for:` durations are not modelled: a rule "fires" here
when its expression returns a sample at the moment of the scrape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.common import REPO

OPERATIONS = REPO / "docs" / "operations.md"

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<op>>=|<=|==|!=|>|<|-|\(|\)|\{|\}|,|=)|(?P<string>\"[^\"]*\")|"
    r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*))"
)
_COMPARE = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class Unsupported(ValueError):
    """The expression uses PromQL this evaluator does not model."""


def alert_rules(path: Path = OPERATIONS) -> dict[str, str]:
    """alert name -> expression, from the YAML block of the page that holds `groups:`."""
    text = path.read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        if block.lstrip().startswith("groups:"):
            doc = yaml.safe_load(block)
            return {rule["alert"]: str(rule["expr"]) for group in doc["groups"] for rule in group["rules"]}
    raise AssertionError(f"no alert rules (a ```yaml block starting with groups:) in {path}")


def scrape(body: str) -> dict[str, Vector]:
    """Prometheus text exposition -> metric sample name -> {label set: value}."""
    out: dict[str, Vector] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return out


@dataclass
class _Scalar:
    value: float


class _Parser:
    def __init__(self, expr: str, samples: dict[str, Vector], now: float) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        expr = expr.strip()
        while position < len(expr):
            match = _TOKEN.match(expr, position)
            if not match or match.end() == position:
                raise Unsupported(f"cannot read {expr[position:]!r}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.samples = samples
        self.now = now

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[0] if self.tokens else None

    def take(self, value: str | None = None) -> str:
        if not self.tokens:
            raise Unsupported("unexpected end of expression")
        _kind, text = self.tokens.pop(0)
        if value is not None and text != value:
            raise Unsupported(f"expected {value!r}, got {text!r}")
        return text

    # expr := and_expr ('or' and_expr)* ; and_expr := compare ('and' compare)*
    def expr(self) -> Vector | _Scalar:
        left = self.and_expr()
        while self.peek() == ("name", "or"):
            self.take()
            right = self.and_expr()
            left = _or(_vector(left), _vector(right))
        return left

    def and_expr(self) -> Vector | _Scalar:
        left = self.compare()
        while self.peek() == ("name", "and"):
            self.take()
            right = self.compare()
            left = _and(_vector(left), _vector(right))
        return left

    def compare(self) -> Vector | _Scalar:
        left = self.difference()
        token = self.peek()
        if token is not None and token[1] in _COMPARE:
            op = self.take()
            right = self.difference()
            if not isinstance(right, _Scalar):
                raise Unsupported("comparisons are with a number")
            test = _COMPARE[op]
            return {labels: value for labels, value in _vector(left).items() if test(value, right.value)}
        return left

    def difference(self) -> Vector | _Scalar:
        left = self.term()
        while self.peek() == ("op", "-"):
            self.take()
            right = self.term()
            if isinstance(left, _Scalar) and isinstance(right, _Scalar):
                left = _Scalar(left.value - right.value)
            elif isinstance(left, _Scalar):
                left = {labels: left.value - value for labels, value in _vector(right).items()}
            elif isinstance(right, _Scalar):
                left = {labels: value - right.value for labels, value in left.items()}
            else:
                raise Unsupported("vector - vector")
        return left

    def term(self) -> Vector | _Scalar:
        kind, text = self.peek() or ("", "")
        if text == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "number":
            return _Scalar(float(self.take()))
        if kind != "name":
            raise Unsupported(f"unexpected {text!r}")
        name = self.take()
        if self.peek() == ("op", "("):
            if name != "time":
                raise Unsupported(f"function {name}()")
            self.take("(")
            self.take(")")
            return _Scalar(self.now)
        matchers: dict[str, str] = {}
        if self.peek() == ("op", "{"):
            self.take()
            while self.peek() != ("op", "}"):
                label = self.take()
                self.take("=")
                matchers[label] = self.take().strip('"')
                if self.peek() == ("op", ","):
                    self.take()
            self.take("}")
        return {
            labels: value
            for labels, value in self.samples.get(name, {}).items()
            if all(dict(labels).get(key) == wanted for key, wanted in matchers.items())
        }


def _vector(value: Vector | _Scalar) -> Vector:
    if isinstance(value, _Scalar):
        raise Unsupported("and/or need vectors")
    return value


def _and(left: Vector, right: Vector) -> Vector:
    return {labels: value for labels, value in left.items() if labels in right}


def _or(left: Vector, right: Vector) -> Vector:
    return {**right, **left}


def evaluate(expr: str, samples: dict[str, Vector], now: float) -> Vector:
    """The samples `expr` returns on `samples` at time `now` (what would fire); raises Unsupported."""
    parser = _Parser(expr, samples, now)
    result = parser.expr()
    if parser.tokens:
        raise Unsupported(f"left over: {parser.tokens}")
    return _vector(result)


def firing(expr: str, samples: dict[str, Vector], now: float, **labels: str) -> bool:
    """Whether `expr` returns a sample carrying `labels` (e.g. queue="q")."""
    return any(
        all(dict(found).get(key) == value for key, value in labels.items()) for found in evaluate(expr, samples, now)
    )
