"""Rollout interpretation without a cluster: status, history, undo planning, pods, versions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from playbook.errors import InvalidInputError, RevisionNotFoundError
from playbook.images import parse_image, set_image_patch, validate_version, version_of
from playbook.rollout import (
    CHANGE_CAUSE_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    Condition,
    PodState,
    Revision,
    RolloutSnapshot,
    RolloutStatus,
    describe_waiting,
    owned_replicasets,
    plan_undo,
    pod_state,
    revision_history,
    revision_of,
    rollout_progress,
    rollout_status,
    templates_equal,
)

UID = "5f0c6d0e-0000-4000-8000-000000000001"


def template(image: str, hash_: str | None = None) -> dict[str, Any]:
    labels = {"app": "rag-api"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels, "creationTimestamp": None},
        "spec": {
            "containers": [{"name": "rag-api", "image": image, "resources": {}}],
            "restartPolicy": "Always",
        },
    }


def deployment(image: str, revision: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": UID,
            "generation": 4,
            "resourceVersion": "1234",
            "annotations": {
                REVISION_ANNOTATION: str(revision),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "ml",
            },
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rag-api"}},
            "template": template(image),
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            **status,
        },
    }


def replicaset(
    image: str, revision: int | None, hash_: str, owner: str = UID, cause: str | None = None
) -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/desired-replicas": "3"}
    if revision is not None:
        annotations[REVISION_ANNOTATION] = str(revision)
    if cause:
        annotations[CHANGE_CAUSE_ANNOTATION] = cause
    return {
        "metadata": {
            "name": f"rag-api-{hash_}",
            "annotations": annotations,
            "ownerReferences": [{"kind": "Deployment", "uid": owner, "controller": True}],
        },
        "spec": {"template": template(image, hash_)},
        "status": {"replicas": 0},
    }


HISTORY = [
    replicaset("ghcr.io/acme/rag-api:v1.2.2", 1, "aaa", cause="release v1.2.2"),
    replicaset("ghcr.io/acme/rag-api:v1.2.3", 2, "bbb"),
    replicaset("ghcr.io/acme/rag-api:v1.2.4", 3, "ccc"),
    replicaset("ghcr.io/acme/other:v9", 7, "zzz", owner="someone-else"),
    replicaset("ghcr.io/acme/rag-api:v0.1", None, "nnn"),
]


# rollout status ---------------------------------------------------------------------------


def test_complete_rollout() -> None:
    assert rollout_progress(deployment("img:v1", 3)) == (
        True,
        False,
        'deployment "rag-api" successfully rolled out',
    )


def test_unobserved_generation_is_not_complete_even_if_counts_match() -> None:
    d = deployment("img:v1", 3)
    d["metadata"]["generation"] = 5
    complete, failed, message = rollout_progress(d)
    assert (complete, failed) == (False, False)
    assert message == "Waiting for deployment spec update to be observed..."


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"updatedReplicas": 1}, "1 out of 3 new replicas have been updated"),
        ({"replicas": 5}, "2 old replicas are pending termination"),
        ({"availableReplicas": 2}, "2 of 3 updated replicas are available"),
    ],
)
def test_waiting_states_follow_kubectl(status: dict[str, int], message: str) -> None:
    complete, failed, text = rollout_progress(deployment("img:v1", 3, **status))
    assert not complete and not failed
    assert message in text


def test_progress_deadline_exceeded_fails_naming_the_condition() -> None:
    timed_out = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "rag-api-ccc" has timed out progressing.',
    }
    # every replica updated and available: only the condition can make this a failure
    status = rollout_status(deployment("img:v1", 3, conditions=[timed_out]))
    assert status.failed and not status.complete
    assert status.message == (
        'deployment "rag-api" exceeded its progress deadline (condition Progressing=False, '
        'reason ProgressDeadlineExceeded: ReplicaSet "rag-api-ccc" has timed out progressing.)'
    )

    # the same rollout still progressing (another reason) is only waiting, not failed
    progressing = {**timed_out, "status": "True", "reason": "ReplicaSetUpdated", "message": ""}
    complete, failed, _ = rollout_progress(
        deployment("img:v1", 3, availableReplicas=2, conditions=[progressing])
    )
    assert (complete, failed) == (False, False)

    # the reason on another condition type is not the progress deadline
    other = {**timed_out, "type": "Available"}
    complete, failed, message = rollout_progress(deployment("img:v1", 3, conditions=[other]))
    assert (complete, failed) == (True, False)
    assert message == 'deployment "rag-api" successfully rolled out'


def test_status_fields() -> None:
    status = rollout_status(deployment("ghcr.io/acme/rag-api:v1.2.4", 3, readyReplicas=2))
    assert status.revision == 3
    assert status.ready_replicas == 2
    assert status.label_selector == "app=rag-api"
    assert status.image_of("rag-api") == "ghcr.io/acme/rag-api:v1.2.4"
    with pytest.raises(InvalidInputError, match=r"no container 'api'.*rag-api"):
        status.image_of("api")


# history and undo -------------------------------------------------------------------------


def test_history_lists_owned_numbered_replicasets_oldest_first() -> None:
    history = revision_history(deployment("x", 3), HISTORY)
    assert [r.number for r in history] == [1, 2, 3]
    assert history[0].change_cause == "release v1.2.2"
    assert history[2].images == (("rag-api", "ghcr.io/acme/rag-api:v1.2.4"),)


def test_undo_goes_to_the_highest_revision_below_the_current_one() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3)
    plan = plan_undo(d, list(reversed(HISTORY)))
    assert plan.current_revision == 3
    assert plan.target.number == 2
    assert not plan.already_current
    ops = {op["op"] + op["path"]: op.get("value") for op in plan.patch}
    assert ops["test/metadata/resourceVersion"] == "1234"
    new_template = ops["replace/spec/template"]
    assert "pod-template-hash" not in new_template["metadata"]["labels"]
    assert new_template["spec"]["containers"][0]["image"] == "ghcr.io/acme/rag-api:v1.2.3"


def test_undo_annotations_follow_kubectl() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3)
    plan = plan_undo(d, HISTORY, to_revision=1)
    annotations = next(op["value"] for op in plan.patch if op["path"] == "/metadata/annotations")
    # kept from the Deployment: the revision and last-applied-configuration
    assert annotations[REVISION_ANNOTATION] == "3"
    assert annotations["kubectl.kubernetes.io/last-applied-configuration"] == "{}"
    # taken from the ReplicaSet: its change-cause; dropped: other Deployment annotations
    assert annotations[CHANGE_CAUSE_ANNOTATION] == "release v1.2.2"
    assert "team" not in annotations
    assert "deployment.kubernetes.io/desired-replicas" not in annotations


def test_undo_to_a_given_revision() -> None:
    plan = plan_undo(deployment("ghcr.io/acme/rag-api:v1.2.4", 3), HISTORY, to_revision=1)
    assert plan.target.number == 1
    assert "from revision 3 to revision 1" in plan.summary


def test_undo_to_a_missing_revision_names_the_existing_ones() -> None:
    with pytest.raises(RevisionNotFoundError, match=r"revision 7 .* revisions: 1, 2, 3"):
        plan_undo(deployment("x", 3), HISTORY, to_revision=7)


def test_undo_without_history_fails() -> None:
    with pytest.raises(RevisionNotFoundError, match="no previous revision"):
        plan_undo(deployment("ghcr.io/acme/rag-api:v1.2.2", 1), HISTORY[:1])


def test_negative_revision_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="positive"):
        plan_undo(deployment("x", 3), HISTORY, to_revision=-1)


def test_undo_to_the_current_template_changes_nothing() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.3", 4)
    rs = copy.deepcopy(HISTORY)
    rs[1]["metadata"]["annotations"][REVISION_ANNOTATION] = "4"
    rs[2]["metadata"]["annotations"][REVISION_ANNOTATION] = "3"
    plan = plan_undo(d, rs, to_revision=4)
    assert plan.already_current
    assert plan.patch == ()
    assert "already at revision 4" in plan.summary


def test_a_renumbered_revision_is_still_found_so_a_rerun_changes_nothing() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.2", 4)
    rs = copy.deepcopy(HISTORY[:3])
    rs[0]["metadata"]["annotations"][REVISION_ANNOTATION] = "4"
    rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = "1"
    plan = plan_undo(d, rs, to_revision=1)
    assert plan.already_current and plan.target.number == 4


def test_paused_deployment_cannot_be_undone() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3)
    d["spec"]["paused"] = True
    with pytest.raises(InvalidInputError, match="paused"):
        plan_undo(d, HISTORY)


def test_template_equality_ignores_hash_and_empty_values() -> None:
    a = template("img:v1", "abc")
    b = template("img:v1")
    b["metadata"].pop("creationTimestamp")
    b["spec"]["containers"][0].pop("resources")
    assert templates_equal(a, b)
    assert not templates_equal(a, template("img:v2", "abc"))


# pods -------------------------------------------------------------------------------------


def pod(name: str, ready: bool, waiting: str | None = None, restarts: int = 0) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": "ccc"}},
        "spec": {"containers": [{"name": "rag-api", "image": "img:v1"}]},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "rag-api", "restartCount": restarts, "state": state}],
        },
    }


def test_pod_state_and_waiting_reasons() -> None:
    pods = [
        pod_state(pod("a", True)),
        pod_state(pod("b", False, "ImagePullBackOff")),
        pod_state(pod("c", False, "ImagePullBackOff")),
        pod_state(pod("d", False, restarts=4)),
    ]
    assert pods[3].restarts == 4
    assert pods[1].template_hash == "ccc"
    assert describe_waiting(pods) == "ImagePullBackOff: b, c; running but not ready: d"


# images and versions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repository", "tag", "digest"),
    [
        ("ghcr.io/acme/rag-api:v1.2.3", "ghcr.io/acme/rag-api", "v1.2.3", None),
        ("localhost:5000/rag-api", "localhost:5000/rag-api", None, None),
        ("localhost:5000/rag-api:v1", "localhost:5000/rag-api", "v1", None),
        ("ghcr.io/acme/rag-api:v1@sha256:abc", "ghcr.io/acme/rag-api", "v1", "sha256:abc"),
    ],
)
def test_parse_image(image: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_image(image)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)


@pytest.mark.parametrize("version", ["v1.2.3", "1.2.3", "v1.2.4-pullfail", "v2.0.0-rc.1"])
def test_valid_versions(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version", ["", "latest", "v1.2", "v1.2.3.4", "v01.2.3", "v1.2.3 ", "v1.2.3;rm", "../v1"]
)
def test_malformed_versions_are_rejected(version: str) -> None:
    with pytest.raises(InvalidInputError, match="malformed version"):
        validate_version(version)


def test_set_image_patch_names_the_container_and_records_the_cause() -> None:
    patch = set_image_patch("rag-api", "ghcr.io/acme/rag-api:v1.2.3", "rollback")
    assert patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "rag-api", "image": "ghcr.io/acme/rag-api:v1.2.3"}
    ]
    assert patch["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION] == "rollback"


# stated exactly: what the API's JSON becomes, and the undo's choices ----------------------


def test_status_reads_every_field_of_the_deployment() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3, readyReplicas=2, availableReplicas=2)
    d["spec"]["paused"] = True
    d["status"]["conditions"] = [
        {
            "type": "Available",
            "status": "False",
            "reason": "MinimumReplicasUnavailable",
            "message": "m",
        }
    ]
    d["status"]["replicas"] = 4
    d["status"]["updatedReplicas"] = 2
    status = rollout_status(d)
    assert status == RolloutStatus(
        namespace="production",
        name="rag-api",
        generation=4,
        observed_generation=4,
        resource_version="1234",
        revision=3,
        desired_replicas=3,
        replicas=4,
        updated_replicas=2,
        ready_replicas=2,
        available_replicas=2,
        images=(("rag-api", "ghcr.io/acme/rag-api:v1.2.4"),),
        selector=(("app", "rag-api"),),
        paused=True,
        conditions=(Condition("Available", "False", "MinimumReplicasUnavailable", "m"),),
        complete=False,
        failed=False,
        message='Waiting for deployment "rag-api" rollout to finish: '
        "2 out of 3 new replicas have been updated...",
    )
    assert status.condition("Available") == status.conditions[0]
    assert status.condition("Progressing") is None


def test_a_bare_deployment_reads_as_one_desired_replica_and_nothing_else() -> None:
    status = rollout_status({})
    assert (status.namespace, status.name, status.resource_version) == ("", "", "")
    assert (status.generation, status.observed_generation, status.revision) == (0, 0, None)
    assert (status.desired_replicas, status.replicas, status.updated_replicas) == (1, 0, 0)
    assert (status.available_replicas, status.paused, status.conditions) == (0, False, ())
    assert (
        status.message
        == 'Waiting for deployment "?" rollout to finish: 0 out of 1 new replicas have been updated...'
    )
    assert rollout_status({"spec": {"replicas": "x"}}).desired_replicas == 1  # unparsable: default
    assert rollout_status({"spec": {"replicas": 0}}).complete
    condition = rollout_status({"status": {"conditions": [{}]}}).conditions
    assert condition == (Condition("", "", "", ""),)


def test_counts_are_read_only_from_integers_or_integer_strings() -> None:
    d = deployment("img:v1", 3, replicas="4", updatedReplicas="-1", availableReplicas=2.5)
    status = rollout_status(d)
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (4, -1, 0)


def test_a_progress_deadline_on_another_condition_type_is_not_a_failure() -> None:
    d = deployment("img:v1", 3, availableReplicas=2)
    d["status"]["conditions"] = [{"type": "Available", "reason": "ProgressDeadlineExceeded"}]
    assert rollout_progress(d)[:2] == (False, False)
    d["status"]["conditions"] = [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}]
    assert rollout_progress(d)[:2] == (False, False)


def test_history_skips_a_replicaset_that_is_not_the_controllers_and_reads_each_revision() -> None:
    # owned by the Deployment but not as its controller (an adopted or orphaned ReplicaSet)
    not_controller = replicaset("ghcr.io/acme/rag-api:v0.9", 9, "ddd")
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    history = [*HISTORY, not_controller]
    history[1] = {**history[1], "status": {"replicas": 2}}
    revisions = revision_history(deployment("x", 3), history)
    assert revisions == (
        Revision(
            1, "rag-api-aaa", (("rag-api", "ghcr.io/acme/rag-api:v1.2.2"),), "release v1.2.2", 0
        ),
        Revision(2, "rag-api-bbb", (("rag-api", "ghcr.io/acme/rag-api:v1.2.3"),), None, 2),
        Revision(3, "rag-api-ccc", (("rag-api", "ghcr.io/acme/rag-api:v1.2.4"),), None, 0),
    )
    # a ReplicaSet without a revision before the others does not hide them
    assert len(revision_history(deployment("x", 3), [HISTORY[4], *HISTORY[:3]])) == 3
    assert revision_of({"metadata": {"annotations": {REVISION_ANNOTATION: "v3"}}}) is None
    assert revision_of({}) is None


def test_undo_without_to_revision_or_with_to_revision_0_goes_to_the_previous_revision() -> None:
    """kubectl rollout undo --to-revision=0 means the previous revision."""
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3)
    previous = plan_undo(d, HISTORY)
    assert plan_undo(d, HISTORY, to_revision=0) == previous
    assert previous.target.number == 2 and previous.current_revision == 3
    assert previous.summary == (
        "roll Deployment production/rag-api back from revision 3 to revision 2 "
        "(rag-api=ghcr.io/acme/rag-api:v1.2.3)"
    )
    assert previous.patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "1234"}
    assert previous.patch[1]["path"] == "/spec/template"
    assert "pod-template-hash" not in previous.patch[1]["value"]["metadata"]["labels"]
    # the ReplicaSet's own template keeps its hash label (a deep copy was patched)
    assert HISTORY[1]["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "bbb"


def test_undo_errors_name_the_deployment_and_its_revisions() -> None:
    d = deployment("x", 3)
    with pytest.raises(
        RevisionNotFoundError,
        match=r"^unable to find revision 5 in the history of Deployment rag-api \(its revisions: 1, 2, 3\)$",
    ):
        plan_undo(d, HISTORY, to_revision=5)
    with pytest.raises(RevisionNotFoundError, match=r"\(its revisions: none\)$"):
        plan_undo(d, [], to_revision=5)
    with pytest.raises(
        RevisionNotFoundError,
        match=r"^no previous revision to roll back to: Deployment rag-api has 1 revision\(s\) in its history$",
    ):
        plan_undo(d, HISTORY[:1])
    with pytest.raises(
        InvalidInputError, match=r"^to_revision must be a positive revision number, not -1$"
    ):
        plan_undo(d, HISTORY, to_revision=-1)
    paused = deployment("x", 3)
    paused["spec"]["paused"] = True
    with pytest.raises(
        InvalidInputError,
        match=r"^Deployment rag-api is paused; resume it \(kubectl rollout resume\) before undoing$",
    ):
        plan_undo(paused, HISTORY)


def test_the_already_current_summary_names_the_revision() -> None:
    plan = plan_undo(deployment("ghcr.io/acme/rag-api:v1.2.3", 3), HISTORY, to_revision=2)
    assert plan.already_current and plan.patch == ()
    assert plan.summary == (
        "Deployment production/rag-api is already at revision 2 (its template equals that "
        "revision's); nothing to do"
    )


def test_a_renumbered_revision_is_found_only_by_its_history_numbers() -> None:
    reused = replicaset("ghcr.io/acme/rag-api:v1.2.2", 4, "aaa")
    reused["metadata"]["annotations"][REVISION_HISTORY_ANNOTATION] = "1, 3,x"
    history = [reused, HISTORY[1]]
    assert plan_undo(deployment("y", 4), history, to_revision=3).target.number == 4
    assert plan_undo(deployment("y", 4), history, to_revision=1).target.number == 4
    with pytest.raises(RevisionNotFoundError):
        plan_undo(deployment("y", 4), history, to_revision=5)


def test_pods_read_phase_readiness_restarts_and_every_waiting_reason() -> None:
    state = pod_state(
        {
            "metadata": {"name": "p", "labels": {"pod-template-hash": "ccc"}},
            "spec": {"containers": [{"image": "a:1"}, {"image": "b:2"}]},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "Initialized", "status": "True"},
                ],
                "initContainerStatuses": [
                    {"restartCount": 1, "state": {"waiting": {"reason": "PodInitializing"}}}
                ],
                "containerStatuses": [
                    {"restartCount": "2", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                    {"state": {"waiting": {}}},
                ],
            },
        }
    )
    assert state == PodState(
        "p",
        "Pending",
        False,
        3,
        ("PodInitializing", "ImagePullBackOff"),
        "ccc",
        ("a:1", "b:2"),
        False,
    )
    bare = pod_state({"metadata": {"deletionTimestamp": "t"}})
    assert bare == PodState("", "Unknown", False, 0, (), None, (), True)
    assert pod_state({}) == PodState("", "Unknown", False, 0, (), None, (), False)


def test_waiting_pods_are_grouped_by_reason_and_deleted_ones_left_out() -> None:
    pods = [
        PodState("b", "Pending", False, 0, ("ImagePullBackOff",), None, (), False),
        PodState("a", "Pending", False, 0, ("ImagePullBackOff", "ErrImagePull"), None, (), False),
        PodState("c", "Running", False, 0, (), None, (), False),
        PodState("b2", "Running", False, 0, (), None, (), False),
        PodState("d", "Running", False, 0, (), None, (), True),
        PodState("e", "Running", True, 0, (), None, (), False),
    ]
    assert describe_waiting(pods) == (
        "ErrImagePull: a; ImagePullBackOff: a, b; running but not ready: b2, c"
    )
    assert describe_waiting(pods[5:]) == "no pod is waiting"


def test_malformed_image_references_are_refused_naming_them() -> None:
    with pytest.raises(InvalidInputError, match=r"^malformed image reference 'a b'$"):
        parse_image("a b")
    with pytest.raises(InvalidInputError, match=r"^malformed image tag '-x' in 'repo:-x'$"):
        parse_image("repo:-x")
    with pytest.raises(InvalidInputError, match=r"^malformed image reference ':v1'$"):
        parse_image(":v1")
    assert parse_image("localhost:5000/rag-api").tag is None
    assert parse_image("r:v1").with_tag("v2") == "r:v2"
    assert version_of("ghcr.io/acme/rag-api:v1.2.3@sha256:abc") == "v1.2.3"
    with pytest.raises(
        InvalidInputError,
        match=r"^malformed version 'v1\.2': expected a release tag like v1\.2\.3 or v1\.2\.3-rc\.1$",
    ):
        validate_version("v1.2")


def test_status_names_the_containers_when_one_is_unknown() -> None:
    d = deployment("a:1", 3)
    d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "s:1"})
    with pytest.raises(
        InvalidInputError,
        match=r"^Deployment production/rag-api has no container 'api' \(its containers: rag-api, sidecar\)$",
    ):
        rollout_status(d).image_of("api")


def test_objects_without_metadata_or_spec_own_nothing_and_plan_nothing() -> None:
    owned_rs = replicaset("a:1", 1, "aaa")
    assert owned_replicasets({}, [owned_rs]) == []
    assert owned_replicasets({"metadata": {"uid": UID}}, [{}]) == []
    with pytest.raises(RevisionNotFoundError, match=r"Deployment None has 0 revision\(s\)"):
        plan_undo({}, [owned_rs])
    bare_rs = {"metadata": {**owned_rs["metadata"]}}  # no spec: an empty template
    plan = plan_undo({"metadata": {"uid": UID}}, [bare_rs], to_revision=1)
    assert (plan.namespace, plan.name, plan.already_current, plan.patch) == ("", "", True, ())
    assert revision_history(deployment("x", 1), [bare_rs])[0].images == ()


def test_two_revisions_are_enough_to_undo_and_duplicated_numbers_do_not_crash() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.3", 2)
    plan = plan_undo(d, HISTORY[:2])
    assert plan.target.number == 1
    assert plan.patch == (
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1234"},
        {
            "op": "replace",
            "path": "/spec/template",
            "value": template("ghcr.io/acme/rag-api:v1.2.2"),
        },
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                REVISION_ANNOTATION: "2",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                CHANGE_CAUSE_ANNOTATION: "release v1.2.2",
            },
        },
    )
    twin = replicaset("ghcr.io/acme/rag-api:v1.2.1", 1, "ttt")
    assert plan_undo(d, [*HISTORY[:2], twin]).target.number == 1


def test_only_the_last_path_segment_of_an_image_can_carry_a_tag() -> None:
    assert parse_image("registry/ns:odd/image").tag is None
    assert parse_image("registry:5000/ns/image:v1").repository == "registry:5000/ns/image"


def test_several_containers_are_listed_in_the_undo_summary() -> None:
    rs = replicaset("a:1", 1, "aaa")
    rs["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "s:1"})
    plan = plan_undo(deployment("b:2", 2), [rs, replicaset("b:2", 2, "bbb")])
    assert plan.summary.endswith("to revision 1 (rag-api=a:1, side=s:1)")


def test_one_snapshot_gives_the_status_and_the_history_of_its_own_read() -> None:
    d = deployment("ghcr.io/acme/rag-api:v1.2.4", 3, readyReplicas=2, availableReplicas=2)
    read = RolloutSnapshot(d, tuple(HISTORY))

    status = read.status()
    assert (status.revision, status.ready_replicas, status.complete) == (3, 2, False)
    assert status == rollout_status(d)
    # only the Deployment's own ReplicaSets with a revision, oldest first
    assert [(r.number, r.replicaset) for r in read.history()] == [
        (1, "rag-api-aaa"),
        (2, "rag-api-bbb"),
        (3, "rag-api-ccc"),
    ]
    assert read.history() == revision_history(d, HISTORY)
