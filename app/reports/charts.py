"""The dashboard's charts as geometry: what to draw and where, in SVG user units.

The SVG itself is drawn by the template app/templates/reports/_charts.html (no script, no
external library, a title and a description for screen readers); this module only computes the
scale, the positions and the texts, so the template has no arithmetic and every text reaches
the page through Jinja's escaping.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Literal

from flask_babel import gettext as _

from app.labels import STAFF_KIND_LABELS
from app.reports.dashboard import Dashboard
from models import ConsultationKind

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


@dataclass(frozen=True)
class Gridline:
    y: float
    text_y: float
    value: float  # printed at the left end, with the chart's unit


@dataclass(frozen=True)
class Block:
    """One series' part of a column: a rectangle with its tooltip's parts."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    series: str
    value: float


@dataclass
class Column:
    """One category: its stacked blocks, bottom first, and its caption under the axis."""

    caption: str
    caption_x: float
    caption_y: int
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class LegendItem:
    x: int
    text_x: int
    colour: str
    name: str


def _ident() -> str:
    """Ids for the title and description: unique on the page, which draws several charts."""
    return f"chart-{uuid.uuid4().hex[:8]}"


@dataclass(kw_only=True)
class Chart:
    """What every chart has: a title and a description (read by screen readers), its size in
    SVG units, the unit of its values."""

    title: str
    desc: str
    width: int
    height: int
    unit: str = ""
    ident: str = field(default_factory=_ident)


@dataclass(kw_only=True)
class ColumnChart(Chart):
    """Vertical columns, one per category, stacked by series, with a legend."""

    grid_left: int
    grid_right: int
    tick_x: int  # where the scale's values end
    gridlines: list[Gridline] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    kind: Literal["columns"] = "columns"


@dataclass(frozen=True)
class BarRow:
    """One horizontal bar: the whole value, and the highlighted part of it drawn over it."""

    rect_y: int
    text_y: int
    label: str
    value: float
    part: float
    width: float
    part_width: float
    value_x: float  # where "value / part" is written, after the bar


@dataclass(kw_only=True)
class BarChart(Chart):
    """Horizontal bars (label, value, part of it highlighted)."""

    left: int
    label_x: int  # where the labels end, left of the bars
    bar_height: int
    value_colour: str
    part_colour: str
    rows: list[BarRow] = field(default_factory=list)
    kind: Literal["bars"] = "bars"


def _nice_max(value: float) -> float:
    """The top of the scale: the value rounded up to 1, 2, 2.5 or 5 times a power of ten."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def stacked_columns(
    title: str,
    categories: list[str],
    series: list[tuple[str, list[float]]],
    *,
    max_value: float | None = None,
    unit: str = "",
) -> ColumnChart:
    """Columns, one per category, stacked by series (a zero draws nothing), with a legend."""
    width, height, left, bottom, top = 720, 300, 44, 46, 34
    plot_w, plot_h = width - left - 10, height - top - bottom
    totals = [sum(s[1][i] or 0 for s in series) for i in range(len(categories))]
    top_value = max_value or _nice_max(max(totals, default=0))
    slot = plot_w / max(len(categories), 1)
    bar_w = slot * 0.6
    desc = "; ".join(
        f"{label}: " + ", ".join(f"{name} {values[i] or 0:g}{unit}" for name, values in series)
        for i, label in enumerate(categories)
    )
    chart = ColumnChart(
        title=title, desc=desc, width=width, height=height, unit=unit,
        grid_left=left, grid_right=width - 10, tick_x=left - 4,
    )  # fmt: skip
    for i in range(5):
        y = round(top + plot_h - plot_h * i / 4, 1)
        chart.gridlines.append(Gridline(y, round(y + 4, 1), top_value * i / 4))
    for i, label in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h
        column = Column(label, round(x + bar_w / 2, 1), top + plot_h + 14)
        chart.columns.append(column)
        for s_index, (name, values) in enumerate(series):
            value = values[i] or 0
            h = plot_h * value / top_value if top_value else 0
            y -= h
            if value:
                colour = PALETTE[s_index % len(PALETTE)]
                rect = (round(x, 1), round(y, 1), round(bar_w, 1), round(h, 1))
                column.blocks.append(Block(*rect, colour, name, value))
    x = left
    for s_index, (name, _values) in enumerate(series):
        chart.legend.append(LegendItem(x, x + 16, PALETTE[s_index % len(PALETTE)], name))
        x += 24 + 7 * len(name)
    return chart


def bars(title: str, items: list[tuple[str, float, float]], *, unit: str = "") -> BarChart:
    """Horizontal bars (label, value, part of it highlighted), e.g. a doctor's consultations
    and how many of them were completed."""
    row_h, left, width = 26, 230, 720
    height = max(1, len(items)) * row_h + 20
    top_value = _nice_max(max((v for _l, v, _p in items), default=0))
    plot_w = width - left - 60
    desc = "; ".join(f"{label}: {value:g} / {part:g}" for label, value, part in items)
    chart = BarChart(
        title=title, desc=desc, width=width, height=height, unit=unit,
        left=left, label_x=left - 6, bar_height=row_h - 8,
        value_colour=PALETTE[0], part_colour=PALETTE[2],
    )  # fmt: skip
    for i, (label, value, part) in enumerate(items):
        y = 10 + i * row_h
        w = plot_w * value / top_value if top_value else 0
        pw = plot_w * part / top_value if top_value else 0
        widths = (round(w, 1), round(pw, 1), round(left + w + 6, 1))
        chart.rows.append(BarRow(y + 3, y + 15, label, value, part, *widths))
    return chart


def dashboard_charts(d: Dashboard) -> dict[str, ColumnChart | BarChart]:
    """The dashboard's four charts, keyed as the page places them."""
    weeks = [m.strftime("%d.%m") for m in d.weeks]
    kinds = [(str(STAFF_KIND_LABELS[ConsultationKind(k)]), v) for k, v in d.by_kind.items()]
    share = [round(s, 1) if s is not None else 0 for s in d.sla_share]
    return {
        "by_kind": stacked_columns(_("Consultations per week by kind"), weeks, kinds),
        "sla": stacked_columns(
            _("Share scheduled within the promised time"),
            weeks,
            [(_("Within the promised time"), share)],
            max_value=100,
            unit="%",
        ),
        "load": bars(
            _("Consultations per doctor in the last four weeks (all / completed)"),
            [(name, total, done) for name, total, done in d.load],
        ),
        "cancellations": stacked_columns(
            _("Cancellations and missed consultations per week"),
            weeks,
            [(_("Cancelled"), d.cancelled), (_("Missed"), d.missed)],
        ),
    }
