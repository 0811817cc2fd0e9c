"""Canary route removal planned without a cluster: found by destination, guarded, never unsafe."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from playbook.errors import UnsafePatchError
from playbook.services import Destination
from playbook.traffic import plan_canary_removal, stable_violations, virtual_service_state

CANARY = Destination(host="rag-api", subset="canary")
STABLE = Destination(host="rag-api", subset="stable")


def dest(subset: str, weight: int | None = None, host: str = "rag-api") -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host, "subset": subset}}
    if weight is not None:
        d["weight"] = weight
    return d


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "rag-api", "namespace": "production", "resourceVersion": "77"},
        "spec": {"hosts": ["rag-api"], "http": list(routes)},
    }


HEADER_ROUTE = {
    "name": "internal",
    "match": [{"headers": {"x-team": {"exact": "qa"}}}],
    "route": [dest("stable")],
}
CANARY_ROUTE = {
    "name": "canary",
    "match": [{"headers": {"x-canary": {"exact": "true"}}}],
    "route": [dest("canary")],
}
SPLIT_ROUTE = {"name": "split", "route": [dest("stable", 90), dest("canary", 10)]}
STABLE_ROUTE = {"name": "primary", "route": [dest("stable")]}


def apply(doc: dict[str, Any], patch: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """A tiny RFC 6902 interpreter for the operations the plans use (test, remove, replace)."""
    doc = copy.deepcopy(doc)
    for op in patch:
        *parents, last = op["path"].strip("/").split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if op["op"] == "test":
            assert target[key] == op["value"], f"test failed at {op['path']}"
        elif op["op"] == "remove":
            del target[key]
        elif op["op"] == "replace":
            target[key] = op["value"]
    return doc


def test_canary_route_at_index_1_after_a_header_match_is_the_one_removed() -> None:
    before = vs(HEADER_ROUTE, CANARY_ROUTE, STABLE_ROUTE)
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert [(c.index, c.action) for c in plan.changes] == [(1, "remove")]
    assert plan.patch == (
        {"op": "test", "path": "/spec/http/1", "value": CANARY_ROUTE},
        {"op": "remove", "path": "/spec/http/1"},
    )
    after = apply(before, plan.patch)
    assert after["spec"]["http"] == [HEADER_ROUTE, STABLE_ROUTE]
    assert list(plan.http_after) == [HEADER_ROUTE, STABLE_ROUTE]


def test_a_weighted_split_before_the_stable_route_is_removed() -> None:
    before = vs(HEADER_ROUTE, SPLIT_ROUTE, STABLE_ROUTE)
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert [(c.index, c.action) for c in plan.changes] == [(1, "remove")]
    assert apply(before, plan.patch)["spec"]["http"] == [HEADER_ROUTE, STABLE_ROUTE]


def test_a_weighted_split_without_a_later_catch_all_is_set_to_all_stable() -> None:
    before = vs(CANARY_ROUTE, SPLIT_ROUTE)
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert [(c.index, c.action) for c in plan.changes] == [
        (0, "remove"),
        (1, "route-all-to-stable"),
    ]
    after = apply(before, plan.patch)
    assert after["spec"]["http"] == [{"name": "split", "route": [dest("stable", 100)]}]
    assert stable_violations(after["spec"]["http"], STABLE) == []


def test_a_matched_canary_route_without_a_later_catch_all_keeps_its_match() -> None:
    before = vs(HEADER_ROUTE, CANARY_ROUTE)
    plan = plan_canary_removal(before, CANARY, STABLE)
    after = apply(before, plan.patch)["spec"]["http"]
    assert after[0] == HEADER_ROUTE
    assert after[1] == {**CANARY_ROUTE, "route": [dest("stable", 100)]}


def test_a_route_sending_everything_to_the_canary_is_pointed_at_stable() -> None:
    before = vs({"route": [dest("canary")]})
    after = apply(before, plan_canary_removal(before, CANARY, STABLE).patch)
    assert after["spec"]["http"] == [{"route": [dest("stable", 100)]}]


def test_a_split_with_a_third_destination_is_refused() -> None:
    route = {"route": [dest("stable", 80), dest("canary", 10), dest("v0", 10)]}
    with pytest.raises(UnsafePatchError, match="refusing to guess"):
        plan_canary_removal(vs(HEADER_ROUTE, route), CANARY, STABLE)


def test_a_remaining_route_to_another_destination_is_refused() -> None:
    other = {"name": "legacy", "route": [dest("v0")]}
    with pytest.raises(UnsafePatchError, match=r"http\[0\] \(legacy\)"):
        plan_canary_removal(vs(CANARY_ROUTE, other), CANARY, STABLE)


def test_nothing_to_do_when_no_route_reaches_the_canary() -> None:
    plan = plan_canary_removal(vs(HEADER_ROUTE, STABLE_ROUTE), CANARY, STABLE)
    assert plan.nothing_to_do and plan.patch == ()


def test_qualified_hosts_match_short_ones() -> None:
    route = {"route": [dest("canary", host="rag-api.production.svc.cluster.local")]}
    plan = plan_canary_removal(vs(route, STABLE_ROUTE), CANARY, STABLE)
    assert [c.index for c in plan.changes] == [0]
    assert not Destination(host="rag-api", subset="canary").matches(
        {"host": "rag-api-v2", "subset": "canary"}
    )


def test_stable_violations_name_each_route() -> None:
    problems = stable_violations([HEADER_ROUTE, SPLIT_ROUTE], STABLE)
    assert problems == ["http[1] (split) does not send 100% to rag-api/stable: rag-api/canary=10%"]


def test_state_summarises_routes() -> None:
    state = virtual_service_state(vs(HEADER_ROUTE, SPLIT_ROUTE))
    assert (
        str(state.routes[1]) == "http[1] split (default) -> rag-api/stable 90%, rag-api/canary 10%"
    )
    assert state.resource_version == "77"
