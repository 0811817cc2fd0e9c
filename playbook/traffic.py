"""Istio VirtualService routes: every path of traffic to the canary, and the plan that removes it.

Pure functions over the VirtualService JSON. The playbook's `remove /spec/http/0` is unsafe
(index 0 may be the stable route); here the canary is reached by any HTTP route with a
destination equal to the configured canary host/subset, wherever it sits, and by any mirror to
it (`mirror` with its `mirrorPercentage`, or an entry of Istio's newer `mirrors` list).

A route to the canary is removed when a catch-all route remains after it; otherwise it is
rewritten to send 100 % to stable, so no request is left without a route. A mirror to the
canary is dropped: Istio mirrors fire and forget (the mirrored answers are discarded), so no
request depends on it. Every operation is preceded by a `test` of that route's exact content,
so if someone changed the VirtualService meanwhile the API rejects the whole patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from playbook.errors import UnsafePatchError
from playbook.services import Destination

Json = dict[str, Any]

MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrorPercent")
"""The fields of a route's single mirror (`mirrorPercent` is Istio's deprecated integer form)."""


@dataclass(frozen=True)
class RouteChange:
    """What happens to one HTTP route: removed, sent wholly to stable, or its mirror dropped."""

    index: int
    name: str | None
    action: str  # "remove" | "route-all-to-stable" | "drop-canary-mirror"


@dataclass(frozen=True)
class Mirror:
    """One mirror of an HTTP route: where copies of its requests go, and what share of them."""

    host: str
    subset: str | None
    percent: float

    def __str__(self) -> str:
        return f"{self.host}/{self.subset or '-'} {self.percent:g}%"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP route of a VirtualService as a person reads it: where its traffic goes."""

    index: int
    name: str | None
    has_match: bool
    destinations: tuple[tuple[str, str | None, int], ...]
    mirrors: tuple[Mirror, ...] = ()

    def __str__(self) -> str:
        dests = ", ".join(f"{h}/{s or '-'} {w}%" for h, s, w in self.destinations)
        kind = "match" if self.has_match else "default"
        mirrors = f"; mirror {', '.join(str(m) for m in self.mirrors)}" if self.mirrors else ""
        return (
            f"http[{self.index}]{f' {self.name}' if self.name else ''} ({kind}) -> {dests}{mirrors}"
        )


@dataclass(frozen=True)
class VirtualServiceState:
    """A VirtualService's identity and HTTP routes."""

    namespace: str
    name: str
    resource_version: str
    generation: int
    routes: tuple[HttpRoute, ...]


@dataclass(frozen=True)
class CanaryRemovalPlan:
    """The JSON patch that takes the canary out of a VirtualService, and its predicted result."""

    namespace: str
    name: str
    resource_version: str
    changes: tuple[RouteChange, ...]
    patch: tuple[Json, ...]
    http_after: tuple[Json, ...]

    @property
    def nothing_to_do(self) -> bool:
        """True when no HTTP route sends or mirrors traffic to the canary."""
        return not self.changes


def _weights(route: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], int]]:
    """Each destination of a route with its effective weight (a lone destination gets 100)."""
    dests = list(route.get("route") or [])
    if len(dests) == 1 and dests[0].get("weight") is None:
        return [(dests[0].get("destination") or {}, 100)]
    return [(d.get("destination") or {}, int(d.get("weight") or 0)) for d in dests]


def _percent(value: Any) -> float | None:
    """`{value: 5.0}` (Istio's Percent) or a bare number, as a float; None when absent."""
    if isinstance(value, Mapping):
        value = value.get("value")
    return float(value) if isinstance(value, int | float | str) and value != "" else None


def _mirrors(route: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], float]]:
    """Each mirror of a route with the share of its requests copied there (100 when unset)."""
    found: list[tuple[Mapping[str, Any], float]] = []
    if isinstance(route.get("mirror"), Mapping):
        percent = _percent(route.get("mirrorPercentage"))
        if percent is None:
            percent = _percent(route.get("mirrorPercent"))
        found.append((route["mirror"], 100.0 if percent is None else percent))
    for entry in route.get("mirrors") or []:
        percent = _percent(entry.get("percentage"))
        found.append((entry.get("destination") or {}, 100.0 if percent is None else percent))
    return found


def virtual_service_state(virtual_service: Mapping[str, Any]) -> VirtualServiceState:
    """The typed summary of a VirtualService JSON object."""
    meta = virtual_service.get("metadata", {})
    http = (virtual_service.get("spec") or {}).get("http") or []
    routes = tuple(
        HttpRoute(
            index=i,
            name=route.get("name"),
            has_match=bool(route.get("match")),
            destinations=tuple(
                (str(d.get("host", "")), d.get("subset"), w) for d, w in _weights(route)
            ),
            mirrors=tuple(
                Mirror(str(d.get("host", "")), d.get("subset"), p) for d, p in _mirrors(route)
            ),
        )
        for i, route in enumerate(http)
    )
    return VirtualServiceState(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        generation=int(meta.get("generation") or 0),
        routes=routes,
    )


def paths_to(state: VirtualServiceState, destination: Destination) -> tuple[str, ...]:
    """Every route weight and mirror of the VirtualService that reaches `destination`."""
    paths = []
    for route in state.routes:
        label = f"http[{route.index}]" + (f" ({route.name})" if route.name else "")
        for host, subset, weight in route.destinations:
            if weight and destination.matches({"host": host, "subset": subset}):
                paths.append(f"{label} sends {weight}% of its requests to {destination}")
        for mirror in route.mirrors:
            if destination.matches({"host": mirror.host, "subset": mirror.subset}):
                paths.append(
                    f"{label} mirrors {mirror.percent:g}% of its requests to {destination}"
                )
    return tuple(paths)


def _label(index: int, route: Mapping[str, Any]) -> str:
    name = route.get("name")
    return f"http[{index}]" + (f" ({name})" if name else "")


def _text(destination: Mapping[str, Any]) -> str:
    return f"{destination.get('host')}/{destination.get('subset') or '-'}"


def stable_violations(
    http: Sequence[Mapping[str, Any]], stable: Destination, canary: Destination | None = None
) -> list[str]:
    """Why some HTTP routes do not send 100 % to stable, or still mirror to the canary.

    A mirror to `canary` is a violation; without `canary`, any mirror to a destination other
    than stable is. Empty when every route sends everything to stable and nothing mirrors to
    the canary.
    """
    problems = []
    if not http:
        problems.append("the VirtualService has no HTTP route")
    for index, route in enumerate(http):
        weights = _weights(route)
        stable_weight = sum(w for d, w in weights if stable.matches(dict(d)))
        others = [
            f"{d.get('host')}/{d.get('subset')}={w}%"
            for d, w in weights
            if w and not stable.matches(dict(d))
        ]
        if stable_weight != 100 or others:
            detail = ", ".join(others) if others else f"stable gets {stable_weight}%"
            problems.append(f"{_label(index, route)} does not send 100% to {stable}: {detail}")
        for destination, percent in _mirrors(route):
            reaches = (
                canary.matches(dict(destination))
                if canary is not None
                else not stable.matches(dict(destination))
            )
            if reaches:
                problems.append(
                    f"{_label(index, route)} mirrors {percent:g}% of its requests to "
                    f"{_text(destination)}"
                )
    return problems


def plan_canary_removal(
    virtual_service: Mapping[str, Any], canary: Destination, stable: Destination
) -> CanaryRemovalPlan:
    """Plan the JSON patch that takes every route, weight and mirror to the canary away.

    A route with a canary destination is removed when a catch-all route (one without `match`)
    remains after it, so the requests it matched fall through to that route, as the playbook
    intends. Without such a route, removing it would leave those requests unrouted, so it is
    kept and rewritten to send 100 % to stable instead. A mirror to the canary (`mirror` and
    its percentage, or an entry of `mirrors`) is dropped from the route that carries it.

    Raises:
        UnsafePatchError: a route splits traffic between the canary and a destination other
            than stable, or the result would not send all traffic to stable; nothing is changed.
    """
    meta = virtual_service.get("metadata", {})
    http: list[Json] = list((virtual_service.get("spec") or {}).get("http") or [])
    changes: list[RouteChange] = []
    patch: list[Json] = []
    after: list[Json | None] = [copy.deepcopy(r) for r in http]
    catch_all_after = False
    for index in reversed(range(len(http))):
        route = http[index]
        dests = list(route.get("route") or [])
        to_canary = [d for d in dests if canary.matches(d.get("destination") or {})]
        mirror_to_canary = isinstance(route.get("mirror"), Mapping) and canary.matches(
            route["mirror"]
        )
        mirrors = list(route.get("mirrors") or [])
        kept_mirrors = [m for m in mirrors if not canary.matches(m.get("destination") or {})]
        if not (to_canary or mirror_to_canary or len(kept_mirrors) < len(mirrors)):
            catch_all_after = catch_all_after or not route.get("match")
            continue
        path = f"/spec/http/{index}"
        name = route.get("name")
        patch.append({"op": "test", "path": path, "value": route})
        if to_canary and catch_all_after:
            patch.append({"op": "remove", "path": path})
            changes.append(RouteChange(index, name, "remove"))
            after[index] = None
            continue
        new_route = copy.deepcopy(route)
        if to_canary:
            rest = [d for d in dests if not canary.matches(d.get("destination") or {})]
            stable_dests = [d for d in rest if stable.matches(d.get("destination") or {})]
            if len(stable_dests) != len(rest) or len(stable_dests) > 1:
                raise UnsafePatchError(
                    f"{_label(index, route)} splits traffic between the canary and "
                    f"{len(rest)} other destination(s); refusing to guess the new weights"
                )
            target = stable_dests[0] if stable_dests else {"destination": _destination(stable)}
            new_route["route"] = [{**target, "weight": 100}]
            patch.append({"op": "replace", "path": f"{path}/route", "value": new_route["route"]})
            changes.append(RouteChange(index, name, "route-all-to-stable"))
        if mirror_to_canary or len(kept_mirrors) < len(mirrors):
            if mirror_to_canary:
                for field in MIRROR_FIELDS:
                    if field in route:
                        patch.append({"op": "remove", "path": f"{path}/{field}"})
                        del new_route[field]
            if len(kept_mirrors) < len(mirrors):
                if kept_mirrors:
                    patch.append(
                        {"op": "replace", "path": f"{path}/mirrors", "value": kept_mirrors}
                    )
                    new_route["mirrors"] = kept_mirrors
                else:
                    patch.append({"op": "remove", "path": f"{path}/mirrors"})
                    del new_route["mirrors"]
            changes.append(RouteChange(index, name, "drop-canary-mirror"))
        after[index] = new_route
        catch_all_after = catch_all_after or not route.get("match")
    http_after = tuple(r for r in after if r is not None)
    if changes:
        problems = stable_violations(http_after, stable, canary)
        if problems:
            raise UnsafePatchError(
                "taking the canary out would leave traffic unsafe: " + "; ".join(problems)
            )
    return CanaryRemovalPlan(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        changes=tuple(sorted(changes, key=lambda c: c.index)),
        patch=tuple(patch),
        http_after=http_after,
    )


def _destination(destination: Destination) -> Json:
    return {
        "host": destination.host,
        **({"subset": destination.subset} if destination.subset else {}),
    }
