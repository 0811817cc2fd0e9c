"""Text charts for markdown artifacts: a series over time, with its threshold levels marked.

Plain text in a code block renders the same in the Prefect UI, a terminal and a review
document, needs no image hosting and no plotting dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

WIDTH = 60
HEIGHT = 10


def _columns(values: Sequence[float | None], width: int) -> list[float | None]:
    """Downsample to at most `width` columns, keeping each bucket's worst (largest) value."""
    if len(values) <= width:
        return list(values)
    out: list[float | None] = []
    for i in range(width):
        bucket = values[i * len(values) // width : (i + 1) * len(values) // width]
        finite = [v for v in bucket if v is not None and not math.isnan(v)]
        out.append(max(finite) if finite else None)
    return out


def text_chart(
    title: str,
    times: Sequence[datetime],
    values: Sequence[float | None],
    marks: Sequence[tuple[str, float]],
    fmt: Callable[[float], str],
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """A column chart of `values` over `times`: `#` per value, `-` on rows of the `marks`
    (label, level), `?` where there is no data, time labels below."""
    columns = _columns(values, width)
    finite = [v for v in columns if v is not None and not math.isnan(v)]
    levels = [level for _, level in marks]
    top = max([*finite, *levels, 0.0])
    bottom = min([*finite, *levels, 0.0])
    span = (top - bottom) or 1.0

    def row_of(value: float) -> int:
        return round((value - bottom) / span * (height - 1))

    mark_rows = {row_of(level): label for label, level in marks}
    lines = [title]
    for row in range(height - 1, -1, -1):
        row_value = bottom + span * row / (height - 1)
        cells = []
        for v in columns:
            if v is None or math.isnan(v):
                cells.append("?" if row == 0 else " ")
            elif row_of(v) >= row and (row > 0 or v > bottom):
                cells.append("#")
            elif row in mark_rows:
                cells.append("-")
            else:
                cells.append(" ")
        label = f" {mark_rows[row]}" if row in mark_rows else ""
        lines.append(f"{fmt(row_value):>9} |{''.join(cells)}|{label}")
    if times:
        first, last = times[0].strftime("%H:%M"), times[-1].strftime("%H:%M")
        gap = max(len(columns) - len(first) - len(last), 1)
        lines.append(f"{'':>9}  {first}{' ' * gap}{last}")
    return "\n".join(lines)
