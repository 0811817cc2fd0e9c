"""`make mutation`'s report: the mutation score of the decision logic and every survivor.

Reads the results `mutmut run` left in `mutants/` and the reviewed list of equivalent mutants
(`tests/equivalent_mutants.txt`: `<mutant> <digest> <reason>` a line, the digest being that of
the mutant's diff, so an entry stops applying as soon as the code it was reviewed on changes).
A mutant is caught when a test failed on it (killed, timed out, crashed); every other mutant
that is not on the list survives, including one no unit test reaches. Prints the score per
module and overall, then each survivor with its diff and digest; exits 1 when the score of
`playbook/` is under `--min`. Mutant-name patterns (`playbook.notices.*`, as `make mutation
MODULES=...` passes them) restrict the report, the list's check and the gate to those mutants,
the only ones a restricted `mutmut run` tested.

Run from the repository root: `.venv/bin/python tests/mutation_report.py --min 90`.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.txt")
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    status: str

    @property
    def module(self) -> str:
        return str(self.path)

    def diff(self) -> str:
        return get_diff_for_mutant(self.name, path=self.path)


def _changed(diff: str) -> list[str]:
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def digest(diff: str) -> str:
    """A short digest of a diff's changed lines (the file names and positions left out)."""
    return hashlib.sha256("\n".join(_changed(diff)).encode()).hexdigest()[:10]


def read_equivalents(path: Path) -> dict[str, tuple[str, str]]:
    """Mutant name -> (digest, reason) from the reviewed list; a line without a reason fails."""
    entries: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            raise SystemExit(f"{path}:{number}: expected `<mutant> <digest> <reason>`")
        entries[parts[0]] = (parts[1], parts[2])
    return entries


def selected(name: str, patterns: list[str]) -> bool:
    """Whether a mutant is one of those the patterns name (all of them without patterns)."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def read_results(patterns: list[str]) -> list[Mutant]:
    """Every mutant of the configured files the patterns select, with its status."""
    mutants = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, exit_code in data.exit_code_by_key.items():
            if selected(name, patterns):
                mutants.append(Mutant(name, Path(path), status_by_exit_code[exit_code]))
    return mutants


def score(caught: int, counted: int) -> str:
    return f"{100 * caught / counted:5.1f} %" if counted else "    - "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=0.0, help="fail under this playbook/ score")
    parser.add_argument("patterns", nargs="*", help="only the mutants of these names (globs)")
    args = parser.parse_args(argv)

    mutants = read_results(args.patterns)
    if not mutants:
        print("no mutation results in mutants/: run `mutmut run` first", file=sys.stderr)
        return 2
    equivalents = read_equivalents(EQUIVALENTS)
    survivors: list[tuple[Mutant, str, str]] = []
    equivalent: set[str] = set()
    stale: list[str] = []
    for m in mutants:
        if m.status in CAUGHT:
            continue
        diff = m.diff()
        entry = equivalents.get(m.name)
        if entry and entry[0] == digest(diff) and m.status == "survived":
            equivalent.add(m.name)
            continue
        if entry:
            stale.append(f"{m.name}: listed as {entry[0]}, now {digest(diff)} ({m.status})")
        survivors.append((m, diff, digest(diff)))
    known = {m.name for m in mutants}
    stale += [
        f"{name}: no such mutant"
        for name in equivalents
        if name not in known and selected(name, args.patterns)
    ]

    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for m in mutants:
        kind = (
            "caught"
            if m.status in CAUGHT
            else "equivalent"
            if m.name in equivalent
            else "no tests"
            if m.status == "no tests"
            else "survived"
        )
        by_module[m.module][kind] += 1

    print(
        f"{'module':<28} {'mutants':>7} {'caught':>7} {'equiv':>6} {'surv':>5} {'no test':>7}  score"
    )
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for module in sorted(by_module):
        c = by_module[module]
        counted = sum(c.values()) - c["equivalent"]
        print(
            f"{module:<28} {sum(c.values()):>7} {c['caught']:>7} {c['equivalent']:>6} "
            f"{c['survived']:>5} {c['no tests']:>7}  {score(c['caught'], counted)}"
        )
        totals[module.split("/")[0]].update(c)
    for area in sorted(totals):
        c = totals[area]
        counted = sum(c.values()) - c["equivalent"]
        print(
            f"{area + '/ (all)':<28} {sum(c.values()):>7} {c['caught']:>7} {c['equivalent']:>6} "
            f"{c['survived']:>5} {c['no tests']:>7}  {score(c['caught'], counted)}"
        )

    if survivors:
        print(f"\n{len(survivors)} surviving mutants (name, digest, status, changed lines):")
        for m, diff, dig in survivors:
            print(f"{m.name} {dig} ({m.status})")
            print("\n".join(f"  {line}" for line in _changed(diff)))
    if stale:
        print("\nentries of the equivalents list that no longer apply:")
        print("\n".join(f"  {line}" for line in stale))

    play = totals.get("playbook", Counter())
    counted = sum(play.values()) - play["equivalent"]
    play_score = 100 * play["caught"] / counted if counted else 100.0
    chosen = (
        " ".join(args.patterns) if len(args.patterns) <= 3 else f"{len(args.patterns)} patterns"
    )
    which = f"playbook/ mutation score of {chosen}" if args.patterns else "playbook/ mutation score"
    print(f"\n{which}: {play_score:.1f} % (minimum {args.min:g} %)")
    return 1 if play_score < args.min else 0


if __name__ == "__main__":
    sys.exit(main())
