"""The decision matrix of the playbook ("When to Rollback") as validated data.

Each indicator (error rate, P99 latency, availability, RAG quality, user complaints, or any
other) has a PromQL query template, a rate window and warning / critical thresholds, loaded
from `deployments/decision-matrix.yaml` (or the file named by `ROLLBACK_FLOWS_DECISION_MATRIX`).
A value is classified OK, WARNING, CRITICAL or NO_DATA; a missing value is NO_DATA and never
passes. How availability is measured (time up and healthy, not 1 - error rate) is explained
in the YAML file. The same file holds the playbook's automatic rollback triggers of a canary
phase (`canary`) and the hourly cap on automatic rollbacks (`automatic_rollbacks`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from playbook.config_files import parse_yaml, read_config_text, validated
from playbook.errors import InvalidInputError

MATRIX_ENV = "ROLLBACK_FLOWS_DECISION_MATRIX"
DEFAULT_MATRIX_FILE = (
    Path(__file__).resolve().parent.parent / "deployments" / "decision-matrix.yaml"
)

PromDuration = Annotated[str, Field(pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")]
"""A Prometheus duration such as `30s`, `5m` or `1h30m`."""

_PLACEHOLDERS = {"service", "window"}
_SERVICE_SELECTOR = 'service="$service"'


def _quoted(value: str) -> str:
    """A PromQL double-quoted string: quotes, backslashes and control characters escaped
    (PromQL reads Go's escapes, which JSON's are among)."""
    return json.dumps(value, ensure_ascii=False)


def label_matchers(labels: Mapping[str, str]) -> str:
    """PromQL equality matchers for `labels`, values escaped: `track="canary",version="v1"`.

    Raises:
        InvalidInputError: a label name Prometheus does not allow.
    """
    for label in labels:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
            raise InvalidInputError(f"malformed Prometheus label name {label!r}")
    return ",".join(f"{label}={_quoted(value)}" for label, value in labels.items())


class Level(StrEnum):
    """How bad one value (or the worst of several) is."""

    OK = "OK"
    WARNING = "WARNING"
    NO_DATA = "NO DATA"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        """Severity order: OK < WARNING < NO_DATA < CRITICAL."""
        return list(Level).index(self)

    @staticmethod
    def worst(levels: Iterable[Level]) -> Level:
        """The most severe of `levels` (OK when there are none)."""
        return max(levels, key=lambda level: level.rank, default=Level.OK)


_COMPARATORS = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<="}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Indicator(_Frozen):
    """One row of the decision matrix: how to measure it and when it is bad."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str = Field(min_length=1)
    unit: Literal["ratio", "seconds", "count", "score"]
    breach: Literal["above", "at_least", "below", "at_most"]
    warning: float
    critical: float
    window: PromDuration
    query: str = Field(min_length=1)
    required: bool = True

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, query: str) -> str:
        template = Template(query)
        if not template.is_valid():
            raise ValueError("query has a malformed $placeholder (write $$ for a literal $)")
        unknown = set(template.get_identifiers()) - _PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"query uses unknown placeholder(s) {sorted(unknown)}; known: $service, $window"
            )
        if "service" not in template.get_identifiers():
            raise ValueError("query must select the service with $service")
        return query

    @model_validator(mode="after")
    def _critical_is_worse(self) -> Indicator:
        if self.higher_is_worse and self.critical < self.warning:
            raise ValueError(
                f"critical {self.critical} must not be below warning {self.warning} "
                f"when breach is {self.breach}"
            )
        if not self.higher_is_worse and self.critical > self.warning:
            raise ValueError(
                f"critical {self.critical} must not be above warning {self.warning} "
                f"when breach is {self.breach}"
            )
        return self

    @property
    def higher_is_worse(self) -> bool:
        """True for error rate or latency, False for availability or quality."""
        return self.breach in ("above", "at_least")

    def breaches(self, value: float, threshold: float) -> bool:
        """Whether `value` is on the bad side of `threshold` under this indicator's rule."""
        match self.breach:
            case "above":
                return value > threshold
            case "at_least":
                return value >= threshold
            case "below":
                return value < threshold
            case "at_most":
                return value <= threshold

    def classify(self, value: float | None) -> Level:
        """OK, WARNING or CRITICAL for a value; NO_DATA for None or NaN."""
        if value is None or math.isnan(value):
            return Level.NO_DATA
        if self.breaches(value, self.critical):
            return Level.CRITICAL
        if self.breaches(value, self.warning):
            return Level.WARNING
        return Level.OK

    def render(
        self, service: str, window: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """The PromQL query for `service` over `window` (this indicator's window by default).

        `labels` (e.g. `{"version": "v1.2.3"}`) are added as matchers to every selector of the
        service (`service="$service"`), so the query reads only those series.

        Raises:
            InvalidInputError: a malformed window, a bad label name, or `labels` for a query
                that does not select the service as `service="$service"`.
        """
        chosen = window or self.window
        if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", chosen):
            raise InvalidInputError(f"malformed Prometheus duration {chosen!r} (e.g. 30s, 5m)")
        # whitespace is collapsed in the query's text only, never inside a quoted value
        query = " ".join(self.query.split())
        if labels:
            if _SERVICE_SELECTOR not in query:
                raise InvalidInputError(
                    f"the {self.name} query selects no `{_SERVICE_SELECTOR}`, so it cannot be "
                    f"narrowed to {dict(labels)}"
                )
            extra = "," + label_matchers(labels).replace("$", "$$")
            query = query.replace(_SERVICE_SELECTOR, _SERVICE_SELECTOR + extra)
        return Template(query).substitute(service=_quoted(service)[1:-1], window=chosen)

    def condition(self, threshold: float) -> str:
        """The breach condition as text, e.g. `> 1 %`."""
        return f"{_COMPARATORS[self.breach]} {self.format(threshold)}"

    def passing_condition(self, threshold: float) -> str:
        """The opposite of the breach condition, e.g. `<= 1 %`, for "expected" columns."""
        opposite = {"above": "<=", "at_least": "<", "below": ">=", "at_most": ">"}
        return f"{opposite[self.breach]} {self.format(threshold)}"

    def format(self, value: float | None) -> str:
        """A value in this indicator's unit as a person reads it (`1.2 %`, `850 ms`)."""
        if value is None or math.isnan(value):
            return "no data"
        match self.unit:
            case "ratio":
                return f"{value * 100:.3g} %"
            case "seconds":
                return f"{value * 1000:.4g} ms"
            case "count":
                return f"{value:g}"
            case _:
                return f"{value:.3g}"


class PrometheusSettings(_Frozen):
    """How every Prometheus request is made: its timeout and the client's retry policy."""

    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    retries: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=30)


@dataclass(frozen=True)
class Classification:
    """One indicator's value and level."""

    indicator: Indicator
    value: float | None
    level: Level

    @property
    def observed(self) -> str:
        """The value as text (`no data` when missing)."""
        return self.indicator.format(self.value)

    def row(self) -> dict[str, str]:
        """A table-artifact row: metric, value, level, warning and critical conditions."""
        ind = self.indicator
        return {
            "metric": ind.title,
            "value": self.observed,
            "level": self.level.value,
            "warning": ind.condition(ind.warning),
            "critical": ind.condition(ind.critical),
        }


@dataclass(frozen=True)
class MatrixResult:
    """The decision matrix applied to a set of values: per indicator and overall."""

    classifications: tuple[Classification, ...]

    @property
    def level(self) -> Level:
        """The worst level; NO_DATA of optional indicators does not count."""
        return Level.worst(
            c.level
            for c in self.classifications
            if c.indicator.required or c.level is not Level.NO_DATA
        )

    def of(self, name: str) -> Classification:
        """The classification of indicator `name`."""
        for c in self.classifications:
            if c.indicator.name == name:
                return c
        raise KeyError(name)

    def rows(self) -> list[dict[str, str]]:
        """Table-artifact rows, one per indicator."""
        return [c.row() for c in self.classifications]


class CanaryTriggers(_Frozen):
    """The playbook's automatic rollback triggers of a canary phase: the matrix's `canary`.

    The canary is rolled back when its health check still fails after `window_seconds`, or
    its own error ratio is above `max_error_ratio`, or its own P99 above `max_p99_seconds`.
    Given only some of them (a run's parameter, a test), the others are the decision
    matrix's (`$ROLLBACK_FLOWS_DECISION_MATRIX`, else the shipped file).
    """

    window_seconds: float = Field(gt=0, le=24 * 3600)
    max_error_ratio: float = Field(gt=0)
    max_p99_seconds: float = Field(gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _the_rest_from_the_matrix(cls, raw: object) -> object:
        if isinstance(raw, dict) and not set(cls.model_fields) <= raw.keys():
            return {**load_decision_matrix().canary_triggers().model_dump(), **raw}
        return raw

    @field_validator("max_error_ratio")
    @classmethod
    def _a_ratio(cls, value: float) -> float:
        if value > 1:
            raise ValueError(f"max_error_ratio is a ratio of 0..1 (5 % is 0.05), not {value}")
        return value


class AutomaticRollbacks(_Frozen):
    """The cap on automatic rollbacks (alerts, the canary guard): the matrix's
    `automatic_rollbacks`. Past it, a person is notified instead."""

    max_per_hour: int = Field(ge=0, le=10)
    """The most automatic rollbacks of one service within a sliding hour (0: none)."""


class DecisionMatrix(_Frozen):
    """Every indicator of the matrix, and how Prometheus is queried for them; the canary
    phase's triggers and the hourly cap of automatic rollbacks, where the file states them."""

    prometheus: PrometheusSettings = PrometheusSettings()
    indicators: dict[str, Indicator]
    canary: CanaryTriggers | None = None
    automatic_rollbacks: AutomaticRollbacks | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_empty_section(cls, raw: object) -> object:
        if isinstance(raw, dict):
            for name in ("canary", "automatic_rollbacks"):
                if name in raw and raw[name] is None:
                    raise ValueError(f"`{name}` is empty: state its values or leave it out")
        return raw

    @field_validator("canary", mode="before")
    @classmethod
    def _every_trigger_stated(cls, raw: object) -> object:
        # The file states each trigger: none is taken from elsewhere.
        if isinstance(raw, dict):
            missing = [name for name in CanaryTriggers.model_fields if name not in raw]
            if missing:
                raise ValueError(f"canary must state {', '.join(missing)}")
        return raw

    def canary_triggers(self) -> CanaryTriggers:
        """The canary phase's automatic rollback triggers; a file without them fails clearly."""
        if self.canary is None:
            raise InvalidInputError(
                "the decision matrix has no `canary` section (window_seconds, "
                "max_error_ratio, max_p99_seconds): the canary guard has no triggers"
            )
        return self.canary

    def max_automatic_per_hour(self) -> int:
        """The hourly cap of automatic rollbacks; a file without it fails clearly."""
        if self.automatic_rollbacks is None:
            raise InvalidInputError(
                "the decision matrix has no `automatic_rollbacks` section (max_per_hour): "
                "automatic rollbacks have no hourly cap"
            )
        return self.automatic_rollbacks.max_per_hour

    def indicator(self, name: str) -> Indicator:
        """The indicator called `name`; unknown names fail clearly."""
        try:
            return self.indicators[name]
        except KeyError:
            known = ", ".join(sorted(self.indicators)) or "none"
            raise InvalidInputError(f"unknown indicator {name!r}; known: {known}") from None

    def classify(self, values: Mapping[str, float | None]) -> MatrixResult:
        """Classify a value per indicator name; indicators not in `values` are left out."""
        return MatrixResult(
            tuple(
                Classification(self.indicator(name), value, self.indicator(name).classify(value))
                for name, value in values.items()
            )
        )


def parse_decision_matrix(text: str, source: str = "decision matrix") -> DecisionMatrix:
    """Validate the YAML text of a decision matrix; invalid content raises InvalidInputError."""
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict) or not isinstance(raw.get("indicators"), dict):
        raise InvalidInputError(f"{source} must be a mapping with an `indicators` mapping")
    indicators = {
        name: {"name": name, **(body or {})} if isinstance(body, dict | None) else body
        for name, body in raw["indicators"].items()
    }
    return validated(DecisionMatrix, {**raw, "indicators": indicators}, source)


def load_decision_matrix(path: Path | None = None) -> DecisionMatrix:
    """Read and validate the decision matrix (`ROLLBACK_FLOWS_DECISION_MATRIX` or the default)."""
    text, source = read_config_text(path, MATRIX_ENV, DEFAULT_MATRIX_FILE, "decision matrix")
    return parse_decision_matrix(text, source)
