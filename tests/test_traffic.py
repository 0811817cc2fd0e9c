"""Canary route removal planned without a cluster: found by destination, guarded, never unsafe."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from playbook.errors import UnsafePatchError
from playbook.services import Destination
from playbook.traffic import (
    HttpRoute,
    Mirror,
    RouteChange,
    VirtualServiceState,
    plan_canary_removal,
    stable_violations,
    virtual_service_state,
)

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


def test_state_reads_identity_weights_and_every_mirror_of_each_route() -> None:
    doc = vs(
        {"name": "qa", "match": [{"uri": {"prefix": "/qa"}}], "route": [dest("stable")]},
        {
            "route": [dest("stable"), dest("canary", 100)],  # unset weight of a split is 0
            "mirror": {"host": "rag-api", "subset": "canary"},
            "mirrorPercentage": {"value": 5.0},
        },
        {
            "route": [dest("stable", 100)],
            "mirrors": [
                {"destination": {"host": "shadow"}, "percentage": {"value": 2.5}},
                {"destination": {"host": "rag-api", "subset": "canary"}},  # unset: 100 %
            ],
        },
    )
    doc["metadata"]["generation"] = 7
    state = virtual_service_state(doc)
    assert state == VirtualServiceState(
        namespace="production",
        name="rag-api",
        resource_version="77",
        generation=7,
        routes=(
            HttpRoute(0, "qa", True, (("rag-api", "stable", 100),)),
            HttpRoute(
                1,
                None,
                False,
                (("rag-api", "stable", 0), ("rag-api", "canary", 100)),
                (Mirror("rag-api", "canary", 5.0),),
            ),
            HttpRoute(
                2,
                None,
                False,
                (("rag-api", "stable", 100),),
                (Mirror("shadow", None, 2.5), Mirror("rag-api", "canary", 100.0)),
            ),
        ),
    )
    assert [str(r) for r in state.routes] == [
        "http[0] qa (match) -> rag-api/stable 100%",
        "http[1] (default) -> rag-api/stable 0%, rag-api/canary 100%; mirror rag-api/canary 5%",
        "http[2] (default) -> rag-api/stable 100%; mirror shadow/- 2.5%, rag-api/canary 100%",
    ]


def test_a_virtual_service_without_metadata_or_hosts_reads_as_empty_never_none() -> None:
    state = virtual_service_state(
        {"spec": {"http": [{"route": [{"destination": {}}], "mirrors": [{}]}]}}
    )
    assert (state.namespace, state.name, state.resource_version, state.generation) == (
        "",
        "",
        "",
        0,
    )
    assert state.routes[0].destinations == (("", None, 100),)
    assert state.routes[0].mirrors == (Mirror("", None, 100.0),)
    empty = virtual_service_state(
        {"spec": {"http": [{"mirror": {"host": "x"}, "mirrorPercent": ""}]}}
    )
    assert empty.routes[0].mirrors == (Mirror("x", None, 100.0),)  # an empty percentage is unset


def test_the_plan_names_the_virtual_service_and_each_changed_route() -> None:
    mirroring = {
        "name": "qa",
        "route": [dest("stable", 100)],
        "mirror": {"host": "rag-api", "subset": "canary"},
    }
    before = vs(CANARY_ROUTE, {"name": "split", "route": [dest("stable", 90), dest("canary", 10)]})
    before["spec"]["http"].insert(0, {**mirroring, "match": [{"uri": {"prefix": "/qa"}}]})
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert (plan.namespace, plan.name, plan.resource_version) == ("production", "rag-api", "77")
    assert plan.changes == (
        RouteChange(0, "qa", "drop-canary-mirror"),
        RouteChange(1, "canary", "remove"),
        RouteChange(2, "split", "route-all-to-stable"),
    )
    bare = plan_canary_removal({"spec": {"http": [{"route": [dest("canary")]}]}}, CANARY, STABLE)
    assert (bare.namespace, bare.name, bare.resource_version) == ("", "", "")


def test_a_canary_route_followed_only_by_matched_routes_is_not_removed() -> None:
    """A route with a match after the canary route is no catch-all: removing would drop requests."""
    before = vs(CANARY_ROUTE, HEADER_ROUTE)
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert plan.changes == (RouteChange(0, "canary", "route-all-to-stable"),)
    assert apply(before, plan.patch)["spec"]["http"][0]["route"] == [dest("stable", 100)]
    # a route that only mirrors, without a match, is a catch-all for the routes before it
    mirror_only = {
        "route": [dest("stable", 100)],
        "mirror": {"host": "rag-api", "subset": "canary"},
    }
    plan = plan_canary_removal(vs(CANARY_ROUTE, mirror_only), CANARY, STABLE)
    assert [c.action for c in plan.changes] == ["remove", "drop-canary-mirror"]


def test_a_split_between_the_canary_and_two_stable_entries_is_refused() -> None:
    route = {
        "route": [
            dest("canary", 10),
            dest("stable", 45),
            dest("stable", 45, host="rag-api.production.svc.cluster.local"),
        ]
    }
    with pytest.raises(UnsafePatchError, match="2 other destination"):
        plan_canary_removal(vs(route), CANARY, STABLE)


def test_a_route_only_to_the_canary_goes_to_stable_without_a_subset_when_stable_has_none() -> None:
    before = vs({"route": [{"destination": {"host": "rag-api", "subset": "canary"}}]})
    plan = plan_canary_removal(before, CANARY, Destination(host="rag-api"))
    assert plan.http_after == ({"route": [{"destination": {"host": "rag-api"}, "weight": 100}]},)
    # a kept stable destination keeps its own fields (headers) and gets the whole weight
    kept = {
        "destination": {"host": "rag-api", "subset": "stable"},
        "weight": 90,
        "headers": {"a": 1},
    }
    plan = plan_canary_removal(vs({"route": [kept, dest("canary", 10)]}), CANARY, STABLE)
    assert plan.http_after[0]["route"] == [{**kept, "weight": 100}]


def test_a_mirrors_list_keeps_its_other_entries_in_the_plan_result() -> None:
    shadow = {"destination": {"host": "shadow"}, "percentage": {"value": 1.0}}
    route = {
        "route": [dest("stable", 100)],
        "mirrors": [shadow, {"destination": {"host": "rag-api", "subset": "canary"}}],
    }
    plan = plan_canary_removal(vs(route), CANARY, STABLE)
    assert plan.http_after == ({"route": [dest("stable", 100)], "mirrors": [shadow]},)


def test_stable_violations_say_what_is_wrong_with_each_route() -> None:
    assert stable_violations([], STABLE) == ["the VirtualService has no HTTP route"]
    # stable listed at 60 % with nothing else: the rest goes nowhere
    assert stable_violations([{"route": [dest("stable", 60)]}], STABLE) == [
        "http[0] does not send 100% to rag-api/stable: stable gets 60%"
    ]
    assert stable_violations(
        [{"name": "x", "route": [dest("stable", 80), dest("v0", 10), dest("canary", 10)]}], STABLE
    ) == ["http[0] (x) does not send 100% to rag-api/stable: rag-api/v0=10%, rag-api/canary=10%"]
    # a zero-weight entry to another destination is no traffic to it
    assert stable_violations([{"route": [dest("stable", 100), dest("canary", 0)]}], STABLE) == []


def test_a_canary_route_before_a_matched_route_that_mirrors_is_rewritten_not_removed() -> None:
    mirroring = {**HEADER_ROUTE, "mirror": {"host": "rag-api", "subset": "canary"}}
    plan = plan_canary_removal(vs(CANARY_ROUTE, mirroring), CANARY, STABLE)
    assert [c.action for c in plan.changes] == ["route-all-to-stable", "drop-canary-mirror"]


def test_a_plan_that_would_leave_traffic_elsewhere_is_refused_naming_the_route() -> None:
    other = {"name": "legacy", "route": [dest("v0")]}
    shadow = {"route": [dest("stable", 100)], "mirror": {"host": "rag-api", "subset": "v0"}}
    with pytest.raises(UnsafePatchError) as refused:
        plan_canary_removal(vs(CANARY_ROUTE, other, shadow), CANARY, STABLE)
    # a mirror to another destination than the canary is no problem of the canary's removal
    assert str(refused.value) == (
        "taking the canary out would leave traffic unsafe: http[0] (legacy) does not send 100% "
        "to rag-api/stable: rag-api/v0=100%"
    )
    two = {"name": "old", "route": [dest("v1")]}
    with pytest.raises(UnsafePatchError, match=r"v0=100%; http\[1\] \(old\) does not send"):
        plan_canary_removal(vs(CANARY_ROUTE, other, two), CANARY, STABLE)
    assert (
        str(virtual_service_state(vs(other)).routes[0])
        == "http[0] legacy (default) -> rag-api/v0 100%"
    )
    assert str(HttpRoute(0, None, True, (("h", None, 100),))) == "http[0] (match) -> h/- 100%"
