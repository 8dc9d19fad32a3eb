"""Short tables for printing state: plain text for a terminal, HTML for Jupyter (internal)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

__all__ = ["causes", "html_table", "seconds", "text_table"]

Row = Sequence[object]


def text_table(headers: Sequence[str], rows: Sequence[Row], note: str = "") -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]
    numeric = [all(_is_number(row[k]) for row in rows) and bool(rows)
               for k in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w)
                       for c, w, num in zip(row, widths, numeric, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if note:
        lines.append(note)
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Row], caption: str = "",
               note: str = "") -> str:
    """The same table as HTML (escaped), for ``_repr_html_``."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td style="text-align:{"right" if _is_number(v) else "left"}">'
            f"{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in rows)
    top = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    foot = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<table>{top}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}"


def seconds(value: float | None) -> str:
    """A latency for a table: ``"0.123 s"``, or ``"-"`` when unknown."""
    return "-" if value is None else f"{value:.3f} s"


def causes(counts: Mapping[str, int]) -> str:
    """``"HTTP 503: 3, ConnectError: 1"``, most frequent first; ``"-"`` when empty."""
    if not counts:
        return "-"
    return ", ".join(f"{cause}: {n}" for cause, n in
                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
