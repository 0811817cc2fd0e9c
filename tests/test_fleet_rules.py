"""The fleet rollback's summary and table, from typed rows: a dry run's plan, every failure
named, and a long Kubernetes error kept to one table cell."""

from __future__ import annotations

from playbook.fleet import FleetReport, FleetRow

BAD, GOOD = "v1.2.4", "v1.2.3"

# what the API server answers a patch of a Deployment in a namespace the flows may not write
FORBIDDEN = (
    'patch Deployment payments/svc-b failed with HTTP 403: deployments.apps "svc-b" is '
    'forbidden: User "system:serviceaccount:rollback-flows:prefect-worker" cannot patch '
    'resource "deployments" in API group "apps" in the namespace "payments"'
)


def test_a_dry_run_is_titled_a_plan_with_its_header_under_a_blank_line() -> None:
    report = FleetReport(
        (
            FleetRow(
                "svc-a", "production", "shop", "would undo revision 2 to 1", True, 0.4, BAD, GOOD
            ),
        ),
        dry_run=True,
        total_seconds=0.4,
    )
    assert report.to_markdown().splitlines() == [
        "# Fleet rollback plan: 1 of 1 services planned in 0.4 s",
        "",
        "| service | environment | from | to | outcome | seconds |",
        "|---|---|---|---|---|---|",
        f"| svc-a | production (`shop`) | `{BAD}` | `{GOOD}` | would undo revision 2 to 1 | 0.4 |",
    ]
    done = FleetReport(report.rows, dry_run=False, total_seconds=0.4)
    assert done.to_markdown().splitlines()[0] == (
        "# Fleet rollback: 1 of 1 services rolled back in 0.4 s"
    )


def test_every_failed_service_is_named_in_the_summary_separated_by_commas() -> None:
    report = FleetReport(
        (
            FleetRow("svc-a", "production", "shop", "undo from revision 2 to 1", True, 1.0),
            FleetRow("svc-b", "production", "payments", FORBIDDEN, False, 0.3),
            FleetRow("svc-c", "staging", "shop-staging", "no revision before 1", False, 0.2),
        ),
        dry_run=False,
        total_seconds=1.1,
    )
    assert report.summary() == (
        "1 of 3 services rolled back in 1.1 s; failed: svc-b (production), svc-c (staging)"
    )


def outcome_cell(outcome: str) -> str:
    row = FleetRow("svc-b", "production", "payments", outcome, False, 0.3)
    line = FleetReport((row,), dry_run=False, total_seconds=0.3).to_markdown().splitlines()[-1]
    prefix = "| svc-b | production (`payments`) | `?` | `?` | "
    assert line.startswith(prefix) and line.endswith(" | 0.3 |"), line
    return line.removeprefix(prefix).removesuffix(" | 0.3 |")


def test_a_failure_of_300_characters_fits_its_cell_whole() -> None:
    outcome = (FORBIDDEN + " " + "x" * 300)[: 300 - len("FAILED: ")]
    assert outcome_cell(outcome) == f"FAILED: {outcome}"  # exactly 300: kept as it is


def test_a_longer_failure_is_cut_to_300_characters_ending_in_an_ellipsis() -> None:
    long = FORBIDDEN + " (retried 3 times: " + FORBIDDEN + ")"
    cell = outcome_cell(long)
    assert len(f"FAILED: {long}") > 300
    assert len(cell) == 300
    assert cell == f"FAILED: {long}"[:299] + "…"
