"""Prometheus tasks: an indicator's value at one time (a number), and range queries (frames).

The client is prometheus-api-client with an explicit request timeout and retry policy (from
`PrometheusSettings`: it has neither by default that we want). Its errors (requests' and its
own `PrometheusApiClientException`) are translated into `playbook.errors` here; a malformed
query (HTTP 400/422) is permanent, an unreachable or overloaded server transient. Every query
names an explicit evaluation time, so a past window is evaluated exactly like a live one.

Frames: `timestamp` (UTC), `value` (float, NaN where Prometheus says NaN), one column per label.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from playbook.errors import (
    InvalidInputError,
)
from playbook.thresholds import PrometheusSettings
from tasks.boundary import retry_condition_fn, translate_prometheus_error

PROMETHEUS_URL_ENV = "ROLLBACK_FLOWS_PROMETHEUS_URL"
MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses more than 11,000 points per series in one range query."""


def resolve_prometheus_url(url: str | None = None) -> str:
    """The Prometheus base URL: `url`, else `$ROLLBACK_FLOWS_PROMETHEUS_URL`."""
    chosen = url or os.environ.get(PROMETHEUS_URL_ENV)
    if not chosen:
        raise InvalidInputError(
            f"no Prometheus URL: pass prometheus_url or set {PROMETHEUS_URL_ENV}"
        )
    if not chosen.startswith(("http://", "https://")):
        raise InvalidInputError(f"malformed Prometheus URL {chosen!r}: expected http(s)://...")
    return chosen.rstrip("/")


def connect(url: str, settings: PrometheusSettings) -> PrometheusConnect:
    """A client that times out after `settings.timeout_seconds` and retries connection errors
    and 502/503/504 `settings.retries` times with exponential backoff."""
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=0,
        status=settings.retries,
        backoff_factor=settings.backoff_seconds,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    return PrometheusConnect(
        url=url,
        retry=retry,
        timeout=settings.timeout_seconds,
        disable_ssl=False,
    )


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise InvalidInputError(f"time {at.isoformat()} has no timezone; pass an aware datetime")
    return at.astimezone(UTC)


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _frame(rows: list[dict[str, Any]], labels: set[str]) -> pd.DataFrame:
    columns = ["timestamp", "value", *sorted(labels)]
    frame = pd.DataFrame(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    frame["value"] = frame["value"].astype("float64")
    return frame


def instant_frame(result: list[dict[str, Any]]) -> pd.DataFrame:
    """The `result` of an instant query as a frame, one row per series."""
    labels = {k for series in result for k in series.get("metric", {})}
    rows = [
        {"timestamp": float(s["value"][0]), "value": _float(s["value"][1]), **s.get("metric", {})}
        for s in result
    ]
    return _frame(rows, labels)


def range_frame(result: list[dict[str, Any]]) -> pd.DataFrame:
    """The `result` of a range query as a long frame, one row per series and point."""
    labels = {k for series in result for k in series.get("metric", {})}
    rows = [
        {"timestamp": float(t), "value": _float(v), **s.get("metric", {})}
        for s in result
        for t, v in s.get("values", [])
    ]
    return _frame(rows, labels).sort_values("timestamp", ignore_index=True)


@task(
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def query_range(
    url: str,
    query: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    settings: PrometheusSettings | None = None,
) -> pd.DataFrame:
    """Evaluate `query` at `start`, `start + step`, ... up to `end` (`/api/v1/query_range`).

    `start` and `end` are whole seconds; a range longer than 10,000 steps is refused (split it).
    """
    first, last = _utc(start), _utc(end)
    seconds = step.total_seconds()
    if seconds <= 0 or last < first:
        raise InvalidInputError(f"bad range {first} .. {last} step {step}")
    if (last - first).total_seconds() / seconds >= MAX_POINTS_PER_QUERY:
        raise InvalidInputError(f"range {first} .. {last} has too many steps of {step}")
    what = f"Prometheus range query {first.isoformat()} .. {last.isoformat()}: {query}"
    client = connect(url, settings or PrometheusSettings())
    try:
        result = client.custom_query_range(query, first, last, step=f"{seconds:g}s")
    except Exception as exc:
        raise translate_prometheus_error(exc, what) from exc
    return range_frame(result)


@task(
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def read_value(
    url: str, query: str, at: datetime, settings: PrometheusSettings | None = None
) -> float | None:
    """The one number `query` has at time `at`; None when Prometheus has no data or says NaN.

    Raises:
        InvalidInputError: the query returned several series (aggregate it in the YAML).
    """
    what = f"Prometheus query at {_utc(at).isoformat()}: {query}"
    client = connect(url, settings or PrometheusSettings())
    try:
        result = client.custom_query(query, params={"time": f"{_utc(at).timestamp():.3f}"})
    except Exception as exc:
        raise translate_prometheus_error(exc, what) from exc
    series = single_series(instant_frame(result), query)
    value = float(series.iloc[0]) if len(series) else math.nan
    return None if math.isnan(value) else value


def single_series(frame: pd.DataFrame, query: str) -> pd.Series:
    """The values of a frame that must hold one series, indexed by timestamp.

    Raises:
        InvalidInputError: the query returned several series (aggregate it in the YAML).
    """
    labels = [c for c in frame.columns if c not in ("timestamp", "value")]
    if labels and len(frame[labels].drop_duplicates()) > 1:
        raise InvalidInputError(
            f"query returned {len(frame[labels].drop_duplicates())} series, expected one "
            f"(aggregate it with sum/max/min): {query}"
        )
    return pd.Series(frame["value"].to_numpy(), index=pd.DatetimeIndex(frame["timestamp"]))


Point = tuple[datetime, float]


@task(
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def read_series(
    url: str,
    query: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    settings: PrometheusSettings | None = None,
) -> tuple[Point, ...]:
    """The one series `query` has from `start` to `end` every `step`, as (time, value) points;
    times without data (or NaN) are left out.

    Raises:
        InvalidInputError: a bad range, or the query returned several series.
    """
    frame = query_range.fn(url, query, start, end, step, settings)
    series = single_series(frame, query)
    return tuple(
        (datetime.fromtimestamp(float(ts.timestamp()), UTC), float(v))
        for ts, v in series.items()
        if not math.isnan(float(v))
    )


def values_at(points: Sequence[Point], times: Sequence[datetime]) -> list[float | None]:
    """The series' value at each of `times`, to the second; None where it has no point."""
    by_second = {int(at.timestamp()): value for at, value in points}
    return [by_second.get(int(t.timestamp())) for t in times]


@task(
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def read_values_at(
    url: str, query: str, times: Sequence[datetime], settings: PrometheusSettings | None = None
) -> tuple[float | None, ...]:
    """The one series `query` has at each of `times` (whole seconds, evenly spaced), in one
    range query; None where it has no data or NaN.

    Raises:
        InvalidInputError: uneven times, or the query returned several series.
    """
    if not times:
        return ()
    step = times[1] - times[0] if len(times) > 1 else timedelta(seconds=1)
    if any(later - earlier != step for earlier, later in pairwise(times)):
        raise InvalidInputError(f"times must be evenly spaced, got {list(times)}")
    points = read_series.fn(url, query, times[0], times[-1], step, settings)
    return tuple(values_at(points, times))
