"""The verdicts of a run as a rich renderable, and the exit code they mean.

:func:`render` is pure: the runner prints its result, tests render it to
``Console(file=io.StringIO(), width=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from verifier.final import CheckResult

STYLES = {"pass": "bold green", "fail": "bold red", "unknown": "bold yellow"}
PROBLEMS_SHOWN = 3
"""How many of a check's problems the table shows; it counts the rest."""


def verdict(result: CheckResult) -> Text:
    """A check's verdict, upper case, in its colour."""
    return Text(result.verdict.upper(), style=STYLES[result.verdict])


def problems(result: CheckResult, *, shown: int = PROBLEMS_SHOWN) -> Text:
    """The first ``shown`` problems, one a line, and how many more there are."""
    cell = Text("\n".join(result.problems[:shown]))
    hidden = len(result.problems) - shown
    if hidden > 0:
        cell.append(f"\n... and {hidden} more", style="dim")
    return cell


def render(results: Sequence[CheckResult], *, title: str,
           stats: Mapping[str, object]) -> RenderableType:
    """One row per check (name, coloured verdict, summary, first problems), then the run's
    ``stats`` (operations, faults, duration...) as a two-column table."""
    table = Table(title=title, header_style="bold", expand=True)
    table.add_column("check", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("summary")
    table.add_column("problems", ratio=2)
    for result in results:
        table.add_row(result.name, verdict(result), result.summary, problems(result))
    figures = Table(show_header=False, box=None, padding=(0, 2))
    figures.add_column("stat", style="dim")
    figures.add_column("value", justify="right")
    for name, value in stats.items():
        figures.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    overall = {0: "pass", 1: "fail", 2: "unknown"}[exit_code(results)]
    footer = Text("overall: ").append(overall.upper(), style=STYLES[overall])
    return Group(table, figures, footer)


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 if every verdict is pass, 1 if any is fail, else 2 (some unknown)."""
    verdicts = {result.verdict for result in results}
    if "fail" in verdicts:
        return 1
    return 2 if "unknown" in verdicts else 0
