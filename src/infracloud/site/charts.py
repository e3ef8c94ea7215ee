"""Charts for the dashboard as plain geometry (rectangles and labels in a view box), drawn as
inline SVG by one template macro (templates/_charts.html): no JavaScript, no fonts or scripts
from elsewhere, and every text escaped by Jinja2 like the rest of the page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str = ""  # the tooltip


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    cls: str = ""
    anchor: str = "start"  # start, middle or end


@dataclass
class Chart:
    width: int
    height: int
    title: str  # what a screen reader says
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    cls: str = ""


@dataclass(frozen=True)
class Part:
    value: float
    cls: str
    title: str


def _r(v: float) -> float:
    return round(v, 1)


def stacked_bar(parts: Sequence[Part], total: float, title: str, *, width: int = 360,
                height: int = 20, text: str = "") -> Chart:
    """One bar of `total`, split into parts from the left; the rest stays empty."""
    chart = Chart(width, height, title, cls="bar")
    chart.rects.append(Rect(0, 0, width, height, "track", title))
    x = 0.0
    for p in parts:
        if total <= 0 or p.value <= 0:
            continue
        w = min(width * p.value / total, width - x)
        chart.rects.append(Rect(_r(x), 0, _r(w), height, p.cls, p.title))
        x += w
    if text:
        chart.labels.append(Label(6, height / 2 + 4, text, "inbar"))
    return chart


def hbars(rows: Sequence[tuple[str, float, str]], title: str, *, width: int = 360,
          row: int = 20, label_width: int = 96, unit: str = "") -> Chart:
    """Horizontal bars, one per (label, value, class), scaled to the largest value."""
    gap = 4
    chart = Chart(width, max(len(rows), 1) * (row + gap), title, cls="hbars")
    top = max((v for _, v, _ in rows), default=0) or 1
    room = width - label_width - 56
    for i, (label, value, cls) in enumerate(rows):
        y = i * (row + gap)
        shown = f"{value:g}{unit}"
        chart.labels.append(Label(label_width - 6, y + row / 2 + 4, label, "axis", "end"))
        chart.rects.append(Rect(label_width, y, room, row, "track", f"{label}: {shown}"))
        if value > 0:
            w = max(room * value / top, 2)
            chart.rects.append(Rect(label_width, y, _r(w), row, cls, f"{label}: {shown}"))
        chart.labels.append(Label(label_width + room + 6, y + row / 2 + 4, shown, "value"))
    if not rows:
        chart.labels.append(Label(0, row / 2 + 4, "nothing to show", "axis"))
    return chart


def histogram(starts: Sequence[dt.datetime], counts: Sequence[dict[str, int]],
              series: Sequence[tuple[str, str]], title: str, *, width: int = 1200,
              height: int = 160, tick_every: int = 10) -> Chart:
    """Stacked columns, one per time bucket (counts[i] by series name), oldest left; a tick
    with the time (UTC) every `tick_every` buckets and the tallest column's count."""
    left, bottom, top_pad = 36, 20, 8
    chart = Chart(width, height, title, cls="histogram")
    plot_h = height - bottom - top_pad
    n = max(len(starts), 1)
    col = (width - left) / n
    top = max((sum(c.values()) for c in counts), default=0)
    scale = plot_h / top if top else 0.0
    chart.rects.append(Rect(left, top_pad, width - left, plot_h, "plot"))
    for i, (start, by_series) in enumerate(zip(starts, counts, strict=True)):
        x = left + i * col
        y = float(top_pad + plot_h)
        total = sum(by_series.values())
        for name, cls in series:
            value = by_series.get(name, 0)
            if value <= 0:
                continue
            h = value * scale
            y -= h
            chart.rects.append(Rect(_r(x + 0.5), _r(y), _r(max(col - 1, 1)), _r(h), cls,
                                    f"{start:%H:%M} UTC: {value} {name} ({total} in all)"))
        if i % tick_every == 0:
            chart.rects.append(Rect(_r(x), top_pad + plot_h, 1, 4, "tick"))
            chart.labels.append(Label(_r(x), height - 4, f"{start:%H:%M}", "axis", "middle"
                                      if i else "start"))
    chart.labels.append(Label(left - 4, top_pad + 10, str(top), "axis", "end"))
    chart.labels.append(Label(left - 4, top_pad + plot_h, "0", "axis", "end"))
    return chart
