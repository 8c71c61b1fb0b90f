"""``report.html``: one self-contained page (inline SVG, no script, no network) for a build.

Sections, each present only when its data is: per-layer latency bars (measured and
estimated side by side, per graph), GPU-delegate coverage (ours vs the stock converter),
parity per artifact, runner and precision, the first divergent layer when ``mirror validate
--localize`` ran, error maps of the reduced precisions against fp32 (from ``mirror profile``),
the pass records, and artifact sizes per target and precision. Inputs are
the build's report.json, validate.json and profile.json.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from mirror.files import atomic_path

_COLORS = ["#3b6fb6", "#e08a2c", "#4a9a4a", "#b8433f", "#7d5ba6", "#8c6d3f", "#d17ab8", "#6f6f6f"]
_CSS = """body{font:14px sans-serif;margin:24px;color:#222;max-width:1100px}h2{margin-top:32px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}.fail{color:#b8433f;font-weight:bold}.legend span{margin-right:12px}
.muted{color:#777}"""


def bar_chart(
    plot_id: str, rows: list[str], series: dict[str, list[float | None]], unit: str,
    labels: dict[str, list[str]] | None = None,
) -> str:  # fmt: skip
    """Grouped horizontal bars: one group per row, one bar per series, one shared scale;
    ``labels`` replaces the printed value of a series' bars."""
    values = [v for vs in series.values() for v in vs if v]
    if not rows or not values:
        return f'<p class="muted" data-plot-empty="{escape(plot_id)}">no data</p>'
    top = max(values)
    bar_h, label_w, plot_w = 9, 300, 560
    group_h = bar_h * len(series) + 8
    height = group_h * len(rows) + 24
    parts = [f'<svg data-plot="{escape(plot_id)}" width="{label_w + plot_w + 90}" height="{height}" role="img">']
    for i, row in enumerate(rows):
        y0 = 4 + i * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y0 + group_h / 2}" font-size="11" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(row[-48:])}</text>')  # fmt: skip
        for k, (name, vs) in enumerate(series.items()):
            if vs[i] is None:
                continue  # no figure (a runner that did not run): no bar, no label
            v = vs[i]
            w = max(plot_w * v / top, 1.0 if v else 0.0)
            y = y0 + k * bar_h
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 1}" '
                f'fill="{_COLORS[k % len(_COLORS)]}"><title>{escape(name)}: {v:.3g} {unit}</title></rect>'
            )
            text = labels[name][i] if labels and name in labels else f"{v:.3g}"
            parts.append(f'<text x="{label_w + w + 3:.1f}" y="{y + bar_h - 1}" font-size="9">{escape(text)}</text>')
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="10" class="muted">{escape(unit)}</text></svg>')
    legend = "".join(f'<span style="color:{_COLORS[k % len(_COLORS)]}">&#9632; {escape(n)}</span>'
                     for k, n in enumerate(series))  # fmt: skip
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def latency_section(profile: dict[str, Any], key: str, n: int = 15) -> str:
    """Per graph: the top layers by estimate ``key``, with every per-layer source beside it."""
    out = ["<h2>Per-layer latency</h2>", f"<p>Top {n} layers by the estimate {escape(key)}, with every per-layer "
           "source beside it (this machine's CPU, or a phone). Bars are each source's share of its own total, "
           "so a phone estimate and a desktop CPU read on one scale; labels give milliseconds.</p>"]  # fmt: skip
    for g in profile.get("graphs", []):
        rows = sorted(g["layers"], key=lambda r: r["estimated_ms"].get(key, 0.0), reverse=True)[:n]
        sources = [s for s, m in g["measured"].items() if m["per_layer"]]
        ms = {f"estimated {key}": [r["estimated_ms"].get(key) for r in rows]}
        ms.update({f"measured {s}": [r["measured_ms"].get(s) for r in rows] for s in sources})
        totals = {f"estimated {key}": sum(r["estimated_ms"].get(key, 0.0) for r in g["layers"])}
        totals.update({f"measured {s}": sum(r["measured_ms"].get(s, 0.0) for r in g["layers"]) for s in sources})
        share = {k: [100 * (v or 0.0) / totals[k] if totals[k] else None for v in vs] for k, vs in ms.items()}
        labels = {k: [f"{v:.2f} ms" if v is not None else "-" for v in vs] for k, vs in ms.items()}
        out.append(f"<h3>{escape(g['graph'])}: {g['flops'] / 1e9:.1f} GFLOPs</h3>")
        out.append(
            bar_chart(f"latency-{g['graph']}", [r["layer"] for r in rows], share, "% of the source's total", labels)
        )
        whole = [f"{escape(s)}: {m['whole_ms']:.1f} ms" + ("" if m["per_layer"] else " (whole model only)")
                 for s, m in g["measured"].items() if m["whole_ms"] is not None]  # fmt: skip
        est = [f"{escape(k)}: {e['frame_ms']:.1f} ms" for k, e in g["estimated"].items()]
        out.append(f"<p>measured whole model: {'; '.join(whole) or 'none'}<br>estimated frame: {'; '.join(est)}</p>")
    return "".join(out)


def heatmap(plot_id: str, grid: list[list[float]], top: float, cell: int = 8) -> str:
    """One error grid as SVG cells, white (no error) to dark red (``top``)."""
    rows, cols = len(grid), len(grid[0]) if grid else 0
    parts = [f'<svg data-plot="{escape(plot_id)}" width="{cols * cell}" height="{rows * cell}" role="img">']
    for r, line in enumerate(grid):
        for c, v in enumerate(line):
            value = _number(v)
            # A non-finite error (an fp16 overflow reads "inf" or "nan") is drawn saturated.
            t = 1.0 if value is None else (min(value / top, 1.0) if top > 0 else 0.0)
            g = int(255 * (1 - t))  # white -> red -> dark red
            color = f"rgb({int(255 - 120 * max(t - 0.5, 0) * 2)},{g},{g})"
            parts.append(f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" height="{cell}" fill="{color}">'
                         f"<title>{v if value is None else format(value, '.3g')}</title></rect>")  # fmt: skip
    return "".join(parts) + "</svg>"


def heatmap_section(profile: dict[str, Any]) -> str:
    """Per graph, |reduced precision - fp32| of its image output, on one colour scale per graph."""
    out = []
    for g in profile.get("graphs", []):
        maps = g.get("error_maps") or {}
        precisions = [p for p in maps if isinstance(maps[p], dict)]
        if not precisions:
            continue
        finite = [x for p in precisions for line in maps[p]["grid"] for x in map(_number, line) if x is not None]
        top = max(finite, default=0.0)
        out.append(f"<h3>{escape(g['graph'])}: <code>{escape(maps['output'])}</code> against "
                   f"{escape(maps['reference'])} (dark red = {top:.3g} mean abs per cell)</h3><div>")  # fmt: skip
        for p in precisions:
            m, plot = maps[p], heatmap(f"heatmap-{g['graph']}-{p}", maps[p]["grid"], top)
            out.append(f'<figure style="display:inline-block;margin:0 16px 0 0">{plot}<figcaption>'
                       f"{escape(m['artifact'])}: max abs {_fig(m['max_abs'], '.3g')}, "
                       f"mean abs {_fig(m['mean_abs'], '.3g')}"
                       "</figcaption></figure>")  # fmt: skip
        out.append("</div>")
    if not out:
        return ""
    return "<h2>Error maps</h2><p>Where each reduced precision differs from fp32 on the same input.</p>" + "".join(out)


def coverage_section(report: dict[str, Any]) -> str:
    """Share of ops on the GPU delegate per LiteRT artifact, ours beside the stock converter's."""
    stock = {b["graph"]: b.get("gpu_delegate") or {} for b in report.get("baseline", [])}
    arts = [a for a in report.get("artifacts", []) if a.get("target") == "tflite" and a.get("gpu_delegate")]
    rows = [a["path"] for a in arts]
    ours = [_share(a["gpu_delegate"]) for a in arts]
    theirs = [_share(stock.get(a["graph"], {})) for a in arts]
    return (
        "<h2>GPU-delegate coverage</h2><p>Percent of ops the LiteRT GPU delegate runs; stock is litert-torch "
        "on the unmodified graph.</p>" + bar_chart("coverage", rows, {"ours": ours, "stock": theirs}, "% of ops")
    )


def _share(gd: dict[str, Any]) -> float | None:
    return 100.0 * gd["ops_on_gpu"] / gd["ops_total"] if gd.get("ops_total") else None


def _fig(value: Any, spec: str) -> str:
    """A figure of the report; non-finite ones are written there as strings ("nan", "inf")."""
    return format(value, spec) if isinstance(value, (int, float)) else escape(str(value))


def _number(x: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or non-finite figure."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _capped(psnr: Any, cap: float = 150.0) -> float | None:
    """A PSNR for the bars: capped (an exact match is inf), None when missing or not a number."""
    if psnr in ("inf", math.inf):
        return cap
    value = _number(psnr)
    return None if value is None else min(value, cap)


def parity_section(report: dict[str, Any], validate: dict[str, Any] | None) -> str:
    """PSNR per artifact and runner, with the table of max abs errors and verdicts."""
    arts = (validate or report).get("artifacts", [])
    runners = sorted({r for a in arts for r, p in (a.get("parity") or {}).items() if "psnr_db" in p})
    rows = [Path(a.get("path") or f"{a['graph']}_{a['precision']}.{a['target']} (not built)").name for a in arts]
    series = {r: [_capped((a.get("parity") or {}).get(r, {}).get("psnr_db")) for a in arts] for r in runners}
    table = ["<table><tr><th>artifact</th><th>precision</th>" + "".join(f"<th>{escape(r)}</th>" for r in runners)]
    for a, name in zip(arts, rows, strict=True):
        cells = []
        for r in runners:
            p = (a.get("parity") or {}).get(r, {})
            text = (
                f"{_fig(p['max_abs'], '.2g')} / {_fig(p['psnr_db'], '.0f')} dB"
                if "max_abs" in p
                else escape(p.get("skipped", "-"))
            )
            cells.append(f'<td class="{"" if p.get("passed", True) else "fail"}">{text}</td>')
        table.append(f"<tr><td>{escape(name)}</td><td>{escape(a.get('precision', ''))}</td>{''.join(cells)}</tr>")
    return (
        "<h2>Parity</h2><p>PSNR of each artifact against PyTorch per runner (capped at 150 dB); the table gives "
        "max abs / PSNR.</p>" + bar_chart("parity", rows, series, "dB") + "".join(table) + "</table>"
    )


def localize_section(validate: dict[str, Any] | None) -> str:
    """``mirror validate --localize``: per artifact and runner, the first divergent layer and the
    layers with the lowest SNR against PyTorch."""
    found = [(Path(a.get("path") or a["graph"]).name, runner, loc) for a in (validate or {}).get("artifacts", [])
             for runner, loc in (a.get("localize") or {}).items() if "unavailable" not in loc]  # fmt: skip
    if not found:
        return ""
    out = ["<h2>First divergent layer</h2><p>From <code>mirror validate --localize</code>: the first layer whose "
           "output misses the bound while its inputs meet it, and the layers with the lowest SNR.</p>"]  # fmt: skip
    rows = ["<table><tr><th>artifact</th><th>runner</th><th>first divergent layer</th><th>op</th><th>SNR</th></tr>"]
    for name, runner, loc in found:
        first = loc.get("first_divergent") or {}
        cells = [
            escape(first.get("module", "none")),
            escape(str(first.get("op", ""))),
            _fig(first.get("snr_db", ""), ".1f"),
        ]
        rows.append(f"<tr><td>{escape(name)}</td><td>{escape(runner)}</td>" + "".join(f"<td>{c}</td>" for c in cells))
        worst = loc.get("worst_layers") or []
        snr = [_capped(e.get("snr_db")) for e in worst]
        out.append(f"<h3>{escape(name)} on {escape(runner)}: lowest SNR</h3>")
        out.append(bar_chart(f"localize-{name}-{runner}", [e["module"] for e in worst], {"SNR dB": snr}, "dB"))
    return "".join(out) + "".join(rows) + "</table>"


def passes_section(report: dict[str, Any]) -> str:
    head = "<tr><th>pass</th><th>graph</th><th>pipeline</th><th>ops removed</th><th>ops added</th>"
    head += "<th>GFLOPs after</th><th>params after</th><th>max abs vs ref</th></tr>"
    rows = [
        f"<tr><td>{escape(p['name'])}</td><td>{escape(p['graph'])}</td><td>{escape(p.get('pipeline', ''))}</td>"
        f"<td>{sum(p['ops_removed'].values())}</td><td>{sum(p['ops_added'].values())}</td>"
        f"<td>{p['flops_after'] / 1e9:.2f}</td><td>{p['params_after']:,}</td>"
        f"<td>{_fig(p['max_abs_vs_reference'], '.2g')}</td></tr>"
        for p in report.get("passes", [])
    ]
    return f'<h2>Pass records</h2><table data-table="passes">{head}{"".join(rows)}</table>'


def sizes_section(report: dict[str, Any]) -> str:
    arts = [a for a in report.get("artifacts", []) if a.get("path")]  # an artifact in error has no file
    rows = [a["path"] for a in arts]
    return "<h2>Sizes</h2>" + bar_chart("sizes", rows, {"MB": [a.get("bytes", 0) / 1e6 for a in arts]}, "MB")


def render(report: dict[str, Any] | None, profile: dict[str, Any] | None, validate: dict[str, Any] | None,
           key: str = "adreno-750/fp16") -> str:  # fmt: skip
    """The whole page."""
    body = ["<h1>MIRROR build report</h1>"]
    if profile:
        body += [latency_section(profile, key), heatmap_section(profile)]
    if report:
        body += [coverage_section(report), parity_section(report, validate), localize_section(validate),
                 passes_section(report), sizes_section(report)]  # fmt: skip
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>MIRROR report</title><style>{_CSS}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")  # fmt: skip


def write_report(build: Path, out: Path | None = None, key: str = "adreno-750/fp16") -> Path:
    """Write ``BUILD/report.html`` from whichever of report.json, validate.json, profile.json exist
    (a validate.json or profile.json older than report.json belongs to an earlier compile: left out)."""

    def read(name: str) -> dict[str, Any] | None:
        path = build / name
        if not path.is_file() or (report.is_file() and path.stat().st_mtime < report.stat().st_mtime):
            return None  # absent, or made for an earlier compile of this folder
        return json.loads(path.read_text())

    report = build / "report.json"
    out = out or build / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(render(read("report.json"), read("profile.json"), read("validate.json"), key))
    return out
