#!/usr/bin/env python3
"""Draws the benchmark chart (SVG, standard library only) from the bench's JSON results.

Usage: python3 benches/chart.py [target/bench-results.json] [target/bench-chart.svg]

Eight panels, one bar group per target: added latency p50 and p99, requests/s at 64
connections, proxy CPU per request, SSE events/s, added SSE latency at light load and with many
streams, memory per open stream. A panel whose figures are missing from the results (e.g. a
quick run has no 10,000-stream figure) is drawn with the series it has, or left out.
"""

import json
import math
import sys
from html import escape

PANELS = [
    ("Added latency p50, small request, 1 connection (us)", False,
     [("added_1conn_p50_us", "1 conn p50")]),
    ("Added latency p99, small request (us)", False,
     [("added_1conn_p99_us", "1 connection"), ("added_rate_p99_us", "fixed rate")]),
    ("Requests/s at 64 connections (higher is better)", True,
     [("rps_64", "requests/s")]),
    ("Proxy CPU per request at 64 connections (us)", False,
     [("cpu_us_per_req", "CPU us/request")]),
    ("SSE at full speed: events/s (higher is better)", True,
     [("sse_fast_events_s", "events/s")]),
    ("SSE, light load (5 ms gaps): added latency (us)", False,
     [("sse_light_added_ttfb_p99_us", "TTFB p99"), ("sse_light_added_lag_p50_us", "event p50"),
      ("sse_light_added_lag_p99_us", "event p99")]),
    ("SSE, many streams (5 ms gaps): added latency (us)", False,
     [("sse_many_added_ttfb_p99_us", "TTFB p99"), ("sse_many_added_lag_p50_us", "event p50"),
      ("sse_many_added_lag_p99_us", "event p99")]),
    ("Memory per open stream, both legs (KiB)", False,
     [("kib_per_stream_1000", "at 1,000"), ("kib_per_stream_10000", "at 10,000"),
      ("kib_per_stream_100", "at 100")]),
]

COLORS = ["#3b6ea8", "#e08a2e", "#5a9e4b", "#b5443c"]
PW, PH = 520, 300          # panel size
ML, MR, MT, MB = 62, 14, 58, 44  # panel margins


def nice_step(span):
    """A round tick step giving about four intervals over `span`."""
    raw = max(span, 1e-9) / 4
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 10000:
        return f"{v / 1000:.0f}k"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def panel(x0, y0, title, targets, series, rows):
    """SVG of one panel at (x0, y0); None when it has no data."""
    series = [(rid, label) for rid, label in series if rid in rows
              and any(rows[rid]["values"].get(t) is not None for t in targets)]
    if not series:
        return None
    vals = [rows[rid]["values"].get(t) for rid, _ in series for t in targets]
    vals = [v for v in vals if v is not None]
    step = nice_step(max(max(vals), 0) - min(min(vals), 0))
    hi = max(math.ceil(max(vals) / step), 1) * step
    lo = min(math.floor(min(vals) / step), 0) * step
    w, h = PW - ML - MR, PH - MT - MB

    def y(v):
        return y0 + MT + h * (hi - v) / (hi - lo)

    out = [f'<text x="{x0 + PW / 2}" y="{y0 + 18}" text-anchor="middle" '
           f'font-weight="bold">{escape(title)}</text>']
    for i in range(round((hi - lo) / step) + 1):
        v = lo + step * i
        out.append(f'<line x1="{x0 + ML}" x2="{x0 + ML + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{x0 + ML - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
                   f'fill="#555">{fmt(v)}</text>')
    out.append(f'<line x1="{x0 + ML}" x2="{x0 + ML + w}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
               f'stroke="#333"/>')
    group = w / len(targets)
    bw = min(38, group * 0.8 / len(series))
    for ti, t in enumerate(targets):
        gx = x0 + ML + group * ti + (group - bw * len(series)) / 2
        for si, (rid, _) in enumerate(series):
            v = rows[rid]["values"].get(t)
            if v is None:
                continue
            bx = gx + si * bw
            top, bottom = sorted((y(v), y(0)))
            out.append(f'<rect x="{bx:.1f}" y="{top:.1f}" width="{bw - 2:.1f}" '
                       f'height="{max(bottom - top, 0.5):.1f}" fill="{COLORS[si % 4]}">'
                       f'<title>{escape(t)}: {v}</title></rect>')
            ty = top - 3 if v >= 0 else bottom + 11
            out.append(f'<text x="{bx + bw / 2 - 1:.1f}" y="{ty:.1f}" text-anchor="middle" '
                       f'font-size="10">{fmt(v)}</text>')
        out.append(f'<text x="{x0 + ML + group * (ti + 0.5):.1f}" y="{y0 + PH - MB + 16}" '
                   f'text-anchor="middle">{escape(t)}</text>')
    if len(series) > 1:
        lx = x0 + ML
        for si, (_, label) in enumerate(series):
            out.append(f'<rect x="{lx}" y="{y0 + 28}" width="10" height="10" '
                       f'fill="{COLORS[si % 4]}"/>')
            out.append(f'<text x="{lx + 14}" y="{y0 + 37}" font-size="11">{escape(label)}</text>')
            lx += 24 + 7 * len(label)
    return "\n".join(out)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "target/bench-chart.svg"
    with open(src) as f:
        res = json.load(f)
    rows = {r["id"]: r for r in res["rows"]}
    targets = res["targets"]
    proxies = [t for t in targets if t != "direct"]
    parts = []
    for title, with_direct, series in PANELS:
        i = len(parts)
        x0, y0 = (i % 2) * PW, 56 + (i // 2) * PH
        svg = panel(x0, y0, title, targets if with_direct else proxies, series, rows)
        if svg:
            parts.append(svg)
    height = 56 + ((len(parts) + 1) // 2) * PH + 10
    m = res.get("machine", {})
    head = (f"llm-keyproxy vs {', '.join(res.get('peers', [])) or 'direct only'} "
            f"({'quick smoke' if res.get('quick') else 'full'} run): {m.get('cores', '?')} cores "
            f"({m.get('cpu_model', '?')}), kernel {m.get('kernel', '?')}")
    sub = ("client, TLS mock upstream and proxies share the machine; added latency = via the "
           "proxy minus direct; lower is better unless noted")
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * PW}" height="{height}" '
           f'viewBox="0 0 {2 * PW} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{PW}" y="22" text-anchor="middle" font-size="14">{escape(head)}</text>',
           f'<text x="{PW}" y="42" text-anchor="middle" fill="#444">{escape(sub)}</text>']
    svg += parts
    svg.append("</svg>\n")
    with open(dst, "w") as f:
        f.write("\n".join(svg))
    print(f"chart written to {dst}")


if __name__ == "__main__":
    main()
