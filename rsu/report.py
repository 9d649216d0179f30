"""HTML report of a replay: summary, road users per class over time, line crossings.

One self-contained file (inline SVG, no scripts or downloads), so it opens anywhere.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

from rsu.annotate import CLASS_COLOURS

WIDTH, HEIGHT, PAD = 760, 260, 40


def _bgr_hex(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def per_second(samples: list[tuple[float, Counter[str]]]) -> dict[str, list[tuple[int, float]]]:
    """Mean road users per frame, per class, in each second of the clip."""
    buckets: dict[int, list[Counter[str]]] = {}
    for t, counts in samples:
        buckets.setdefault(int(t), []).append(counts)
    classes = sorted({c for _, counts in samples for c in counts})
    return {
        cls: [
            (s, sum(c[cls] for c in frames) / len(frames)) for s, frames in sorted(buckets.items())
        ]
        for cls in classes
    }


def _chart(series: dict[str, list[tuple[int, float]]]) -> str:
    if not series:
        return "<p>No road users were detected.</p>"
    t_max = max((s for points in series.values() for s, _ in points), default=0) or 1
    y_max = max((v for points in series.values() for _, v in points), default=0) or 1
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="road users">']
    axis = 'stroke="#888"'
    parts.append(
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" {axis}/>'
    )
    parts.append(f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>')
    parts.append(f'<text x="4" y="16" font-size="11">{y_max:.0f}</text>')
    parts.append(f'<text x="{WIDTH - 60}" y="{HEIGHT - 22}" font-size="11">{t_max} s</text>')
    for k, (cls, points) in enumerate(series.items()):
        colour = _bgr_hex(CLASS_COLOURS.get(cls, (128, 128, 128)))
        xy = " ".join(
            f"{PAD + s / t_max * (WIDTH - PAD - 10):.1f},"
            f"{HEIGHT - PAD - v / y_max * (HEIGHT - PAD - 10):.1f}"
            for s, v in points
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{xy}">'
                     f"<title>{html.escape(cls)}</title></polyline>")  # fmt: skip
        parts.append(f'<text x="{PAD + 10 + 90 * k}" y="{HEIGHT - 6}" font-size="12" '
                     f'fill="{colour}">{html.escape(cls)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def write_report(
    path: Path,
    summary: dict[str, object],
    samples: list[tuple[float, Counter[str]]],
    line_totals: dict[tuple[str, bool, str], int],
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
        if k != "stages"
    )
    crossings = (
        "".join(
            f"<tr><td>{html.escape(line)}</td><td>{'positive' if positive else 'negative'}</td>"
            f"<td>{html.escape(cls)}</td><td>{n}</td></tr>"
            for (line, positive, cls), n in sorted(line_totals.items())
        )
        or '<tr><td colspan="4">no crossings</td></tr>'
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Replay report: {html.escape(str(summary.get("scene", "")))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style>
</head><body>
<h1>Replay of {html.escape(str(summary.get("scene", "")))}</h1>
<h2>Road users per frame, by class (mean over each second)</h2>
{_chart(per_second(samples))}
<h2>Line crossings</h2>
<table id="crossings"><tr><th>line</th><th>direction</th><th>class</th><th>count</th></tr>
{crossings}</table>
<h2>Summary</h2>
<table id="summary">{rows}</table>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
