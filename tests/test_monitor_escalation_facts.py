"""What the escalation says of points Prometheus could not be queried for: the first three,
after one line per indicator, so a long outage does not drown the indicators."""

from __future__ import annotations

from dataclasses import replace

from test_monitor_report import run


def test_the_escalation_names_the_first_three_points_that_could_not_be_queried() -> None:
    failed = tuple(f"Error Rate at 12:0{i}:00: Connection refused" for i in range(5))
    facts = replace(run(2, recovered=False), unqueried=failed).escalation_facts()
    assert facts["indicators"][2:] == [
        "no data, the query failed: Error Rate at 12:00:00: Connection refused",
        "no data, the query failed: Error Rate at 12:01:00: Connection refused",
        "no data, the query failed: Error Rate at 12:02:00: Connection refused",
    ]
    assert [line.split(":")[0] for line in facts["indicators"][:2]] == ["Error Rate", "P99 Latency"]
