"""Istio VirtualService routes: find the canary route by its destination and plan its removal.

Pure functions over the VirtualService JSON. The playbook's `remove /spec/http/0` is unsafe
(index 0 may be the stable route); here a canary route is any HTTP route with a destination
equal to the configured canary host/subset, wherever it sits. It is removed when a catch-all
route remains after it; otherwise it is rewritten to send 100 % to stable, so no request is
left without a route. Every operation is preceded by a `test` of that route's exact content, so if
someone changed the VirtualService meanwhile the API rejects the whole patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from playbook.errors import UnsafePatchError
from playbook.services import Destination

Json = dict[str, Any]


@dataclass(frozen=True)
class RouteChange:
    """What happens to one HTTP route: removed, or rewritten to send everything to stable."""

    index: int
    name: str | None
    action: str  # "remove" | "route-all-to-stable"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP route of a VirtualService as a person reads it: where its traffic goes."""

    index: int
    name: str | None
    has_match: bool
    destinations: tuple[tuple[str, str | None, int], ...]

    def __str__(self) -> str:
        dests = ", ".join(f"{h}/{s or '-'} {w}%" for h, s, w in self.destinations)
        kind = "match" if self.has_match else "default"
        return f"http[{self.index}]{f' {self.name}' if self.name else ''} ({kind}) -> {dests}"


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
    """The JSON patch that removes the canary from a VirtualService, and its predicted result."""

    namespace: str
    name: str
    resource_version: str
    changes: tuple[RouteChange, ...]
    patch: tuple[Json, ...]
    http_after: tuple[Json, ...]

    @property
    def nothing_to_do(self) -> bool:
        """True when no HTTP route sends traffic to the canary."""
        return not self.changes


def _weights(route: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], int]]:
    """Each destination of a route with its effective weight (a lone destination gets 100)."""
    dests = list(route.get("route") or [])
    if len(dests) == 1 and dests[0].get("weight") is None:
        return [(dests[0].get("destination") or {}, 100)]
    return [(d.get("destination") or {}, int(d.get("weight") or 0)) for d in dests]


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


def _label(index: int, route: Mapping[str, Any]) -> str:
    name = route.get("name")
    return f"http[{index}]" + (f" ({name})" if name else "")


def stable_violations(http: Sequence[Mapping[str, Any]], stable: Destination) -> list[str]:
    """Why some HTTP routes do not send 100 % to stable; empty when all of them do."""
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
        if route.get("mirror"):
            problems.append(f"{_label(index, route)} mirrors traffic to {route['mirror']}")
    return problems


def plan_canary_removal(
    virtual_service: Mapping[str, Any], canary: Destination, stable: Destination
) -> CanaryRemovalPlan:
    """Plan the JSON patch that takes every canary destination out of the HTTP routes.

    A route with a canary destination is removed when a catch-all route (one without `match`)
    remains after it, so the requests it matched fall through to that route, as the playbook
    intends. Without such a route, removing it would leave those requests unrouted, so it is
    kept and rewritten to send 100 % to stable instead.

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
        canary_dests = [d for d in dests if canary.matches(d.get("destination") or {})]
        if not canary_dests:
            catch_all_after = catch_all_after or not route.get("match")
            continue
        path = f"/spec/http/{index}"
        patch.append({"op": "test", "path": path, "value": route})
        if catch_all_after:
            patch.append({"op": "remove", "path": path})
            changes.append(RouteChange(index, route.get("name"), "remove"))
            after[index] = None
            continue
        rest = [d for d in dests if not canary.matches(d.get("destination") or {})]
        stable_dests = [d for d in rest if stable.matches(d.get("destination") or {})]
        if len(stable_dests) != len(rest) or len(stable_dests) > 1:
            raise UnsafePatchError(
                f"{_label(index, route)} splits traffic between the canary and "
                f"{len(rest)} other destination(s); refusing to guess the new weights"
            )
        target = stable_dests[0] if stable_dests else {"destination": _destination(stable)}
        new_route = [{**target, "weight": 100}]
        patch.append({"op": "replace", "path": f"{path}/route", "value": new_route})
        changes.append(RouteChange(index, route.get("name"), "route-all-to-stable"))
        after[index] = {**route, "route": new_route}
        catch_all_after = catch_all_after or not route.get("match")
    http_after = tuple(r for r in after if r is not None)
    if changes:
        problems = stable_violations(http_after, stable)
        if problems:
            raise UnsafePatchError(
                "removing the canary route(s) would leave traffic unsafe: " + "; ".join(problems)
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
