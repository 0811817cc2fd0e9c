"""Who is told and in which words, pure: the contacts a notice mentions and why, the contacts
file and the templates directory an operator can swap, how a template is rendered, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbook.errors import InvalidInputError
from playbook.notices import (
    CONTACTS_ENV,
    DEFAULT_CONTACTS_FILE,
    DEFAULT_NOTICES_DIR,
    NOTICES_ENV,
    Cause,
    Contacts,
    Mention,
    duration_text,
    infrastructure_evidence,
    load_contacts,
    mentions,
    notices_dir,
    parse_contacts,
    render_notice,
)
from playbook.rollout import PodState

TEAM = """
lead: SRE
contacts:
  - {role: Platform, handle: "@platform", notify: infrastructure}
  - {role: SRE, handle: "@sre", notify: always}
  - {role: ML, handle: "@ml", notify: model}
  - {role: Product, handle: "@po", notify: users}
  - {role: Duty manager, handle: "@duty", notify: always}
"""


def team() -> Contacts:
    return parse_contacts(TEAM, "team.yaml")


def pod(name: str, *reasons: str) -> PodState:
    return PodState(name, "Pending", False, 0, reasons, "h", (), False)


def test_every_contact_the_facts_call_for_is_mentioned_in_the_contacts_order_with_why() -> None:
    cause = Cause(
        frozenset({"user_complaints", "rag_quality_ndcg", "availability", "error_rate"}),
        ("pod rag-api-1: Unschedulable",),
    )
    assert mentions(team(), cause) == (
        Mention("@platform", "Platform", "infrastructure: pod rag-api-1: Unschedulable"),
        Mention("@sre", "SRE", "every rollback"),
        Mention("@ml", "ML", "model-related: rag_quality_ndcg breached"),
        Mention("@po", "Product", "users affected: availability, user_complaints breached"),
        Mention("@duty", "Duty manager", "every rollback"),
    )
    assert str(mentions(team(), cause)[2]) == "@ml (ML: model-related: rag_quality_ndcg breached)"


def test_without_evidence_only_those_always_told_are_mentioned() -> None:
    assert [m.handle for m in mentions(team(), Cause())] == ["@sre", "@duty"]
    assert [m.handle for m in mentions(team(), Cause(frozenset({"p99_latency"})))] == [
        "@sre",
        "@duty",
    ]


def test_infrastructure_evidence_shows_three_facts_and_counts_the_rest() -> None:
    def why(*facts: str) -> str:
        return mentions(team(), Cause(infrastructure=facts))[0].why

    assert why("a", "b", "c") == "infrastructure: a; b; c"
    assert why("a", "b", "c", "d") == "infrastructure: a; b; c (+1 more)"
    assert why("a", "b", "c", "d", "e") == "infrastructure: a; b; c (+2 more)"


def test_infrastructure_evidence_is_the_platforms_waiting_reasons_then_api_errors() -> None:
    pods = [
        pod("rag-api-1", "ErrImagePull", "CreateContainerConfigError"),
        pod("rag-api-2", "InvalidImageName"),
        pod("rag-api-3", "CrashLoopBackOff"),
        pod("rag-api-4", "ErrImageNeverPull", "RegistryUnavailable", "Unschedulable"),
        pod("rag-api-5", "ImagePullBackOff"),
    ]
    assert infrastructure_evidence(pods, ["the API server answered 503"]) == (
        "pod rag-api-1: ErrImagePull",
        "pod rag-api-2: InvalidImageName",
        "pod rag-api-4: ErrImageNeverPull",
        "pod rag-api-4: RegistryUnavailable",
        "pod rag-api-4: Unschedulable",
        "pod rag-api-5: ImagePullBackOff",
        "the API server answered 503",
    )
    assert infrastructure_evidence() == ()


def test_the_lead_is_the_handle_of_the_lead_role() -> None:
    assert team().lead_handle == "@sre"


def test_a_contacts_file_that_is_not_a_mapping_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInputError, match=r"^team\.yaml must be a mapping$"):
        parse_contacts("- role: SRE\n", "team.yaml")
    with pytest.raises(InvalidInputError, match=r"^contacts must be a mapping$"):
        parse_contacts("just words")
    with pytest.raises(InvalidInputError, match=r"^team\.yaml is invalid"):
        parse_contacts("lead: SRE\ncontacts: []\n", "team.yaml")
    with pytest.raises(InvalidInputError, match=r"^team\.yaml is not valid YAML"):
        parse_contacts("lead: [SRE\n", "team.yaml")


def test_contacts_are_read_from_the_path_else_the_environment_else_the_shipped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(TEAM)
    other = tmp_path / "other.yaml"
    other.write_text("lead: Ops\ncontacts: [{role: Ops, handle: '@ops', notify: always}]\n")
    monkeypatch.delenv(CONTACTS_ENV, raising=False)
    assert load_contacts().lead_handle == "@oncall"  # deployments/contacts.yaml
    assert load_contacts(DEFAULT_CONTACTS_FILE) == load_contacts()
    monkeypatch.setenv(CONTACTS_ENV, str(other))
    assert load_contacts().lead_handle == "@ops"
    assert load_contacts(mine).lead_handle == "@sre"
    monkeypatch.setenv(CONTACTS_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(InvalidInputError, match=r"cannot read the contacts .*missing\.yaml"):
        load_contacts()
    (tmp_path / "bad.yaml").write_text("lead: Ops\ncontacts: []\n")
    with pytest.raises(InvalidInputError, match=r"^\S*bad\.yaml is invalid"):
        load_contacts(tmp_path / "bad.yaml")


def test_the_templates_directory_is_the_environments_else_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NOTICES_ENV, raising=False)
    assert notices_dir() == DEFAULT_NOTICES_DIR
    assert (DEFAULT_NOTICES_DIR / "incident-start.txt.j2").is_file()
    monkeypatch.setenv(NOTICES_ENV, "")
    assert notices_dir() == DEFAULT_NOTICES_DIR
    monkeypatch.setenv(NOTICES_ENV, str(tmp_path))
    assert notices_dir() == tmp_path
    (tmp_path / "hello.txt.j2").write_text("Hello {{ who }}\n")
    assert render_notice("hello", {"who": "@oncall"}) == "Hello @oncall\n"


def test_a_template_renders_as_written_blocks_leave_no_blank_lines_nothing_is_escaped(
    tmp_path: Path,
) -> None:
    (tmp_path / "list.txt.j2").write_text(
        "\n\nContacts:\n"
        "  {% for m in mentions %}\n"
        "- {{ m }}\n"
        "  {% endfor %}\n"
        "Run: <{{ url }}> & more\n\n\n"
    )
    text = render_notice(
        "list", {"mentions": ["@a (x)", "@b (y)"], "url": "http://ui/runs/1?a=1&b=2"}, tmp_path
    )
    assert text == "Contacts:\n- @a (x)\n- @b (y)\nRun: <http://ui/runs/1?a=1&b=2> & more\n"


def test_a_broken_template_is_named_with_its_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.txt.j2").write_text("fine\n{% if %}\n")
    with pytest.raises(InvalidInputError) as raised:
        render_notice("broken", {}, tmp_path)
    assert str(raised.value).startswith(f"notice template {tmp_path / 'broken.txt.j2'}, line 2: ")
    with pytest.raises(InvalidInputError) as raised:
        render_notice("missing", {}, tmp_path)
    assert str(raised.value) == f"no notice template missing.txt.j2 in {tmp_path}"
    (tmp_path / "needs.txt.j2").write_text("{{ verdict }}\n")
    with pytest.raises(InvalidInputError) as raised:
        render_notice("needs", {}, tmp_path)
    assert str(raised.value) == (
        f"notice template {tmp_path / 'needs.txt.j2'}: 'verdict' is undefined"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0 s"),
        (0.4, "0 s"),
        (59.4, "59 s"),
        (59.6, "1 min 0 s"),
        (60, "1 min 0 s"),
        (3599, "59 min 59 s"),
        (3600, "1 h 0 min"),
        (7322, "2 h 2 min"),
    ],
)
def test_a_duration_rounds_to_the_second_and_shows_two_units_at_most(
    seconds: float, text: str
) -> None:
    assert duration_text(seconds) == text
