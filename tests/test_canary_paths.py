"""Every path of traffic to the canary, planned without a cluster: routes, weights and mirrors.

Istio mirrors fire and forget, so a mirror to the canary is dropped with the routes to it, in
the same guarded patch; a route that cannot be made safe is still refused, by name.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from playbook.errors import UnsafePatchError
from playbook.services import Destination
from playbook.traffic import (
    paths_to,
    plan_canary_removal,
    stable_violations,
    virtual_service_state,
)

CANARY = Destination(host="rag-api", subset="canary")
STABLE = Destination(host="rag-api", subset="stable")
SHADOW = {"host": "rag-api-shadow"}


def dest(subset: str, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": "rag-api", "subset": subset}}
    if weight is not None:
        d["weight"] = weight
    return d


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "rag-api", "namespace": "production", "resourceVersion": "9"},
        "spec": {"hosts": ["rag-api"], "http": list(routes)},
    }


def apply(doc: dict[str, Any], patch: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """RFC 6902 test, remove and replace, enough for the plans' operations."""
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


# The VirtualService: the first route mirrors 5 % to the canary, then a header-match
# route to the canary and a 90/10 split.
MIRRORING = {
    "name": "qa-team",
    "match": [{"headers": {"x-team": {"exact": "qa"}}}],
    "route": [dest("stable")],
    "mirror": {"host": "rag-api", "subset": "canary"},
    "mirrorPercentage": {"value": 5.0},
}
TESTERS = {
    "name": "testers",
    "match": [{"headers": {"x-canary": {"exact": "true"}}}],
    "route": [dest("canary")],
}
SPLIT = {"name": "split", "route": [dest("stable", 90), dest("canary", 10)]}


def test_mirror_header_route_and_split_all_end_at_stable_in_one_guarded_patch() -> None:
    before = vs(MIRRORING, TESTERS, SPLIT)
    plan = plan_canary_removal(before, CANARY, STABLE)
    assert [(c.index, c.action) for c in plan.changes] == [
        (0, "drop-canary-mirror"),
        (1, "remove"),
        (2, "route-all-to-stable"),
    ]
    # one `test` of each route touched, before the operations on it
    assert [op["path"] for op in plan.patch if op["op"] == "test"] == [
        "/spec/http/2",
        "/spec/http/1",
        "/spec/http/0",
    ]
    assert plan.patch[-3:] == (
        {"op": "test", "path": "/spec/http/0", "value": MIRRORING},
        {"op": "remove", "path": "/spec/http/0/mirror"},
        {"op": "remove", "path": "/spec/http/0/mirrorPercentage"},
    )
    after = apply(before, plan.patch)["spec"]["http"]
    assert after == [
        {"name": "qa-team", "match": MIRRORING["match"], "route": [dest("stable")]},
        {"name": "split", "route": [dest("stable", 100)]},
    ]
    assert list(plan.http_after) == after
    assert stable_violations(after, STABLE, CANARY) == []
    assert paths_to(virtual_service_state(vs(*after)), CANARY) == ()


def test_paths_to_the_canary_name_each_weight_and_mirror() -> None:
    state = virtual_service_state(vs(MIRRORING, TESTERS, SPLIT))
    assert paths_to(state, CANARY) == (
        "http[0] (qa-team) mirrors 5% of its requests to rag-api/canary",
        "http[1] (testers) sends 100% of its requests to rag-api/canary",
        "http[2] (split) sends 10% of its requests to rag-api/canary",
    )
    assert str(state.routes[0]) == (
        "http[0] qa-team (match) -> rag-api/stable 100%; mirror rag-api/canary 5%"
    )


def test_a_mirror_without_a_percentage_copies_everything_and_is_dropped() -> None:
    route = {"route": [dest("stable")], "mirror": {"host": "rag-api", "subset": "canary"}}
    before = vs(route)
    assert stable_violations([route], STABLE, CANARY) == [
        "http[0] mirrors 100% of its requests to rag-api/canary"
    ]
    after = apply(before, plan_canary_removal(before, CANARY, STABLE).patch)
    assert after["spec"]["http"] == [{"route": [dest("stable")]}]


def test_the_deprecated_mirror_percent_goes_with_its_mirror() -> None:
    route = {"route": [dest("stable")], "mirror": CANARY.model_dump(), "mirrorPercent": 20}
    assert paths_to(virtual_service_state(vs(route)), CANARY) == (
        "http[0] mirrors 20% of its requests to rag-api/canary",
    )
    after = apply(vs(route), plan_canary_removal(vs(route), CANARY, STABLE).patch)
    assert after["spec"]["http"] == [{"route": [dest("stable")]}]


def test_only_the_canary_entries_of_the_mirrors_list_are_dropped() -> None:
    route = {
        "name": "primary",
        "route": [dest("stable")],
        "mirrors": [
            {"destination": {"host": "rag-api", "subset": "canary"}, "percentage": {"value": 50}},
            {"destination": SHADOW, "percentage": {"value": 1}},
        ],
    }
    plan = plan_canary_removal(vs(route), CANARY, STABLE)
    after = apply(vs(route), plan.patch)["spec"]["http"]
    assert after == [{**route, "mirrors": [{"destination": SHADOW, "percentage": {"value": 1}}]}]
    # a mirror elsewhere is no path to the canary; it is left as it is
    assert stable_violations(after, STABLE, CANARY) == []

    only_canary = {**route, "mirrors": route["mirrors"][:1]}
    after = apply(vs(only_canary), plan_canary_removal(vs(only_canary), CANARY, STABLE).patch)
    assert after["spec"]["http"] == [{"name": "primary", "route": [dest("stable")]}]


def test_a_split_without_a_catch_all_after_loses_its_weight_and_its_mirror() -> None:
    route = {**SPLIT, "mirror": CANARY.model_dump(), "mirrorPercentage": {"value": 5.0}}
    plan = plan_canary_removal(vs(route), CANARY, STABLE)
    assert [(c.index, c.action) for c in plan.changes] == [
        (0, "route-all-to-stable"),
        (0, "drop-canary-mirror"),
    ]
    assert apply(vs(route), plan.patch)["spec"]["http"] == [
        {"name": "split", "route": [dest("stable", 100)]}
    ]


def test_a_route_that_cannot_be_made_safe_is_still_refused_by_name() -> None:
    legacy = {"name": "legacy", "route": [dest("v0")], "mirror": CANARY.model_dump()}
    with pytest.raises(UnsafePatchError, match=r"http\[0\] \(legacy\) does not send 100%"):
        plan_canary_removal(vs(legacy), CANARY, STABLE)
    three_way = {"name": "three", "route": [dest("stable", 80), dest("canary", 10), dest("v0", 10)]}
    with pytest.raises(UnsafePatchError, match=r"http\[0\] \(three\) splits traffic"):
        plan_canary_removal(vs(three_way), CANARY, STABLE)


def test_without_a_canary_any_mirror_but_to_stable_is_a_violation() -> None:
    routes = [{"route": [dest("stable")], "mirror": SHADOW}]
    assert stable_violations(routes, STABLE) == [
        "http[0] mirrors 100% of its requests to rag-api-shadow/-"
    ]
    assert stable_violations(routes, STABLE, CANARY) == []
