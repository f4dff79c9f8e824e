"""A shareable report of the results store: one self-contained HTML document (and its PDF) for people
who read what they are sent rather than open the dashboard.

In the order a reader needs it: the recommendation under a budget (`engine.recommend`) and what it
rests on; the leaderboard; accuracy against cost with the Pareto front; robustness and domain shift;
deployment variants against their parents; published results beside ours; per-class IoU; a few
images where the two best models with kept predictions disagree most; and what every number stands
on (data, setups, dates, code versions, store, runs). The tables and figures are the dashboard's own
(`dashboard.tables`, `dashboard.charts`), so the report shows what the dashboard shows.

The HTML needs no network: plotly's JavaScript is inlined once, images are data: URIs, the CSS is
inline. The same store and arguments (and the same `date`) give the same bytes: everything is
sorted, every figure has a fixed id, no clock is read. `write_pdf` prints it on A4 with headless
Chromium (Debian's /usr/bin/chromium or $CHROMIUM) through Playwright, every request but file:,
data: and about: blocked.

    python -m engine report --out report.html --pdf report.pdf [--date 2026-12-01] [--max-latency-ms 80]

No Streamlit here: the module imports and runs anywhere the engine does.
"""
from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass, replace
from functools import cached_property
from html import escape
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from sqlalchemy.engine import make_url

from dashboard import browser, charts, tables
from engine import render
from engine.classes import CLASS_NAMES, PALETTE
from engine.errors import UserError
from engine.recommend import LIMITS, Budget, BudgetError, Recommendation, accuracy_label, reason_for, recommend
from engine.setups import parse_setup

FIG_WIDTH = 900        # px: every chart, so that it prints as it shows
IMAGE_WIDTH = 480      # px: the most an example image is stored at
RENDER_TIMEOUT_MS = 120_000
NAMED_POINTS = 6       # up to this many models a chart names; beyond, it numbers them as the leaderboard does
PLOT_CONFIG = {"displayModeBar": False, "responsive": False}
SYNTHETIC_WARNING = ("These models were trained and evaluated on synthetic street scenes, not Cityscapes: their "
                     "accuracy says nothing about real streets.")
DASH = "–"

CSS = """
@page { size: A4; margin: 12mm 10mm; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1f2933; font-size: 13px;
       line-height: 1.45; max-width: 940px; margin: 24px auto; padding: 0 12px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 2px solid #d9dee5; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .note, figcaption { color: #52606d; font-size: 12px; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 12px; margin: 10px 0; }
.answer { font-size: 18px; margin: 6px 0; }
.recommendation { background: #eef6ff; border-left: 4px solid #2b6cb0; padding: 8px 14px; margin: 12px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 11.5px; width: 100%; }
th, td { border-bottom: 1px solid #e1e5ea; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
th small { font-weight: normal; color: #52606d; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tr { break-inside: avoid; }
figure { margin: 10px 0; break-inside: avoid; }
figure.chart h3 { margin-top: 0; }
figure.chart > div { width: 900px; }
.examples { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 10px; }
.examples img { width: 100%; border: 1px solid #d9dee5; }
.examples figure { margin: 0; }
.example { break-inside: avoid; margin-bottom: 14px; }
.chip { display: inline-block; width: 11px; height: 11px; border: 1px solid rgba(0,0,0,.3); margin: 0 4px 0 10px;
        vertical-align: -1px; }
section.major { break-before: page; }
a { color: #2b6cb0; }
@media print { body { zoom: 0.76; margin: 0 auto; max-width: none; width: 940px; } }
"""


class ReportError(UserError, RuntimeError):
    """A report that cannot be made: nothing evaluated to report on, or no Chromium to print it."""


@dataclass
class _Facts:
    """What every section reads: the runs shown (leaderboard rows, best mIoU first, and their frame
    in lineage order), their labels, the recommendation (and the setup its costs hold for), every
    evaluation, the published results and how many examples to show."""
    store: object
    dataset: str
    rows: list[dict]
    frame: pd.DataFrame
    labels: dict[int, str]
    rec: Recommendation
    evaluations: list[dict]
    published: pd.DataFrame
    examples: int

    @property
    def ids(self) -> list[int]:
        return [r["run_id"] for r in self.rows]

    @cached_property
    def numbers(self) -> dict[int, int]:
        """run_id -> its row in the leaderboard (1, 2, ...)."""
        return {int(r): i for i, r in enumerate(self.frame["run_id"], 1)}

    @cached_property
    def setup(self) -> dict | None:
        """The `Store.cost_setups()` row of the setup the costs hold for (None when none was measured)."""
        return next((s for s in self.store.cost_setups() if s["setup"] == self.rec.setup), None)

    @property
    def resolution(self) -> str | None:
        return parse_setup(self.rec.setup)["resolution"] if self.rec.setup else None


class _Figures:
    """Numbers the report's figures in order (deterministic div ids) and embeds each at FIG_WIDTH."""

    def __init__(self):
        self.count = 0

    def html(self, fig: go.Figure, caption: str = "", heading: str = "") -> str:
        """The figure as a <figure> (its div `report-fig-N`, no plotly.js) under an escaped heading and
        over an escaped caption, kept on one page."""
        self.count += 1
        fig.update_layout(width=FIG_WIDTH, autosize=False)
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"report-fig-{self.count}",
                          config=PLOT_CONFIG, default_width=f"{FIG_WIDTH}px",
                          default_height=f"{fig.layout.height or 450}px")
        return ('<figure class="chart">' + (f"<h3>{escape(heading)}</h3>" if heading else "") + div
                + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>")


# ---------------------------------------------------------------- formatting

def _num(value, spec: str) -> str:
    """`value` formatted with `spec`, or a dash when it is missing (None, NaN)."""
    if value is None or pd.isna(value):
        return DASH
    return format(value, spec)


def _str(value) -> str:
    """An optional text cell, escaped; a dash when it is missing (None, NaN)."""
    return DASH if value is None or pd.isna(value) else escape(str(value))


def _times(ratio) -> str:
    """'x0.26', or a dash when the ratio is missing."""
    return DASH if ratio is None or pd.isna(ratio) else f"x{ratio:.2f}"


def _table(head: list[str], body: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table of cells that are already HTML; the columns in `numeric` right-aligned."""
    def row(cells, tag):
        return "<tr>" + "".join(f'<{tag}{" class=num" if i in numeric else ""}>{c}</{tag}>'
                                for i, c in enumerate(cells)) + "</tr>"

    return ("<table><thead>" + row(head, "th") + "</thead><tbody>"
            + "".join(row(cells, "td") for cells in body) + "</tbody></table>")


def _p(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{escape(text)}</p>'


def _when(dt) -> str:
    return f"{dt:%Y-%m-%d %H:%M} UTC" if dt is not None else DASH


def _link(text, url) -> str:
    """An <a href> to an http(s) `url` (escaped), or the escaped text alone (a dash without either)."""
    text, url = (None if v is None or pd.isna(v) else str(v) for v in (text, url))
    shown = escape(text or url or DASH)
    if url and url.startswith(("http://", "https://")):
        return f'<a href="{escape(url, quote=True)}">{shown}</a>'
    return shown


def _shown_url(url: str) -> str:
    """The store's URL with its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- what is shown

def _restricted(rec: Recommendation, run_ids: set[int], budget: Budget) -> Recommendation:
    """The recommendation among `run_ids` only: ranked and excluded filtered, the reason said again."""
    ranked = [r for r in rec.ranked if r["run_id"] in run_ids]
    excluded = [r for r in rec.excluded if r["run_id"] in run_ids]
    return replace(rec, ranked=ranked, excluded=excluded, recommended=ranked[0]["name"] if ranked else None,
                   reason=reason_for(ranked, budget, rec.setup, len(ranked) + len(excluded)))


def _facts(store, dataset: str | None, run_ids, budget: Budget, examples: int) -> _Facts:
    """The runs to report on (the completed, evaluated runs of the dataset, of `run_ids` when given)
    and the recommendation among them; ReportError when there is none."""
    try:
        rec = recommend(store, budget, dataset=dataset)
    except BudgetError as e:
        raise ReportError(str(e)) from None
    rows = [r for r in store.leaderboard(setup=rec.setup, status="completed")
            if r["miou"] is not None and r["dataset"] == rec.dataset]
    if run_ids is not None:
        wanted = {int(r) for r in run_ids}
        rows = [r for r in rows if r["run_id"] in wanted]
        if not rows:
            raise ReportError(f"none of the runs {sorted(wanted)} is a completed, evaluated run of {rec.dataset}")
        rec = _restricted(rec, wanted, budget)
    frame = tables.lineage_view(tables.leaderboard_frame(rows), "miou")
    return _Facts(store=store, dataset=rec.dataset, rows=rows, frame=frame, labels=tables.run_labels(frame),
                  rec=rec, evaluations=store.evaluations(),
                  published=tables.published_frame(store.published()), examples=examples)


# ---------------------------------------------------------------- sections

def _limits_text(rec: Recommendation) -> str:
    """The budget's limits in words, or that none was set."""
    budget = rec.budget
    parts = [f"{words} {'≥' if op == '>=' else '≤'} {budget[key]:g}"
             for key, _, op, words in LIMITS if budget.get(key) is not None]
    return "; ".join(parts) if parts else "no limit set"


def _name(f: _Facts, ranked: dict) -> str:
    """A recommendation row's model as the report labels it (its uid added where a variant has several runs)."""
    return f.labels.get(ranked["run_id"], ranked["name"])


def _header(f: _Facts, title: str, date: str | None) -> str:
    """The title, the date, the synthetic-data warning and the recommendation with what it rests on."""
    rec = f.rec
    out = [f"<h1>{escape(title)}</h1>"]
    if date:
        out.append(_p(date, "meta"))
    out.append(_p(f"{len(f.rows)} evaluated models trained on {f.dataset}; costs measured on "
                  f"{rec.setup_label or 'no recorded setup'}.", "meta"))
    if f.dataset == "synthetic":
        out.append(f'<div class="warning"><b>Warning:</b> {escape(SYNTHETIC_WARNING)}</div>')
    answer = (f"Recommended: <b>{escape(_name(f, rec.ranked[0]))}</b>" if rec.ranked
              else "No model meets the budget.")
    out += ['<div class="recommendation">', "<h2>Recommendation</h2>", f'<p class="answer">{answer}</p>',
            f"<p>{escape(rec.reason)}</p>", "<ul>",
            f"<li>Budget: {escape(_limits_text(rec))}; ranked by {escape(accuracy_label(rec.rank_by))}.</li>",
            f"<li>Latency and GFLOPs hold for {escape(rec.setup_label or 'no recorded setup')}, each model at its own "
            "precision (the leaderboard's last column).</li>"]
    if rec.ranked:
        out.append("<li>Meet the budget, best first: " + escape(", ".join(_name(f, r) for r in rec.ranked))
                   + ".</li>")
    for r in rec.excluded:
        out.append(f"<li>Excluded: {escape(_name(f, r))} ({escape(r['reason'])}).</li>")
    out.append("</ul>")
    out += [_p(note) for note in rec.notes if "synthetic street scenes" not in note]  # the warning above says it
    out.append("</div>")
    return "\n".join(out)


def _not_shown(f: _Facts) -> str:
    """A line naming the runs of the dataset left out of the report (not completed or not evaluated)."""
    shown = set(f.ids)
    left = [f"{r['variant']} ({r['status'] if r['status'] != 'completed' else 'not evaluated'})"
            for r in f.store.runs(dataset=f.dataset) if r["id"] not in shown]
    return _p("Not in this report: " + ", ".join(left) + ".") if left else ""


def _leaderboard(f: _Facts, explicit_runs: bool) -> str:
    """The leaderboard as an HTML table, derived models under their parents, costs with their setup."""
    at = f.resolution
    setup = f.rec.setup_label or "no recorded setup"
    head = ["#", "Model", "Method", "mIoU", "mPC", "rPC", "Params (M)", "Size (MB)",
            f"GFLOPs<br><small>at {escape(at or DASH)}</small>",
            f"Latency (ms)<br><small>on {escape(setup)}</small>", "Precision"]
    precision = {r["run_id"]: r.get("latency_precision") for r in f.rows}
    body = [[str(f.numbers[r.run_id]), escape(f.labels[r.run_id] if r.model == r.variant else r.model),
             escape(tables.method_text(r.method, r.ratio)), _num(r.miou, ".3f"), _num(r.mpc, ".3f"),
             _num(r.rpc, ".1%"), _num(r.params_m, ".1f"), _num(r.size_mb, ".1f"), _num(r.gflops, ".2f"),
             _num(r.latency_ms, ".1f"), _str(precision[r.run_id])] for r in f.frame.itertuples()]
    caption = (f"mIoU: the latest evaluation of each run on {f.dataset} (its split and images: the last page). "
               "mPC: the mean mIoU under "
               "corruptions; rPC = mPC / clean mIoU. Size: the checkpoint on disk. GFLOPs: one image at "
               f"{at or 'the setup resolution'}; latency: the median of one forward on {setup}. "
               "↳: a model made from the model above it. A dash: not measured.")
    return "\n".join(['<section><h2>Leaderboard</h2>', _table(head, body, {0, *range(3, 10)}), _p(caption),
                      "" if explicit_runs else _not_shown(f), "</section>"])


def _front_text(plotted: pd.DataFrame, x: str, y: str, axes: dict[str, str], labels: dict[int, str]) -> str:
    """The Pareto front in words: each model on it with its cost and accuracy, cheapest first."""
    front = charts.pareto_front(plotted, x, y)
    return (f"Pareto front ({tables.EFFICIENCY_AXES[x]}, {axes[y]}): "
            + " → ".join(f"{labels[r['run_id']]} ({r[x]:.3g}, {r[y]:.3f})" for _, r in front.iterrows()) + ".")


def _name_points(fig: go.Figure, f: _Facts) -> None:
    """Each measured model's name beside its point (a printed chart has no hover), or its row number in
    the leaderboard when more than NAMED_POINTS are drawn; points within 2% of either axis of each
    other share one label, on the first of them, leaning towards the middle."""
    points = [t for t in fig.data if t.mode == "markers" and t.customdata is not None]
    drawn = [(i, j, x, y, int(c[0])) for i, t in enumerate(points) for j, (x, y, c) in
             enumerate(zip(t.x, t.y, t.customdata))]
    if not drawn:
        return
    xs, ys = [d[2] for d in drawn], [d[3] for d in drawn]
    dx, dy = 0.02 * (max(xs) - min(xs)), 0.02 * (max(ys) - min(ys))
    spots: list[tuple[float, float, list[int]]] = []
    carrier: dict[tuple[int, int], list[int]] = {}
    for i, j, x, y, run_id in drawn:
        near = next((s for s in spots if abs(x - s[0]) <= dx and abs(y - s[1]) <= dy), None)
        if near is None:
            near = (x, y, [])
            spots.append(near)
            carrier[(i, j)] = near[2]
        near[2].append(run_id)
    name = f.labels.get if len(drawn) <= NAMED_POINTS else (lambda run_id: str(f.numbers[run_id]))
    middle = (min(xs) + max(xs)) / 2
    for i, t in enumerate(points):
        text = [", ".join(name(r) for r in sorted(carrier[(i, j)], key=f.numbers.get)) if (i, j) in carrier else ""
                for j in range(len(t.x))]
        t.update(mode="markers+text", text=text, textfont=dict(size=10), cliponaxis=False,
                 textposition=["top left" if x > middle else "top right" for x in t.x])


def _tradeoffs(f: _Facts, figs: _Figures) -> str:
    """Accuracy against cost: clean mIoU against latency and size, mPC against latency where measured,
    and clean mIoU against parameters with the published results as hollow markers."""
    runs, axes = tables.with_accuracy_axes(f.frame, f.evaluations)
    published = f.published
    plots = [("latency_ms", "miou"), ("size_mb", "miou")]
    if runs["mpc"].notna().any():
        plots.append(("latency_ms", "mpc"))
    if not published.empty:
        plots.append(("params_m", "miou"))
    out = ['<section class="major"><h2>Accuracy against cost</h2>',
           _p("A model is on the Pareto front (dashed) when no other model is both cheaper on that axis and more "
              "accurate. Marker shape: how the model was made; a line joins a derived model to its parent. Beside each "
              "point: the model's name or, with many models, its row (#) in the leaderboard.")]
    for x, y in plots:
        plotted = runs.dropna(subset=[x, y])
        if plotted.empty:
            out.append(_p(f"No model has both {tables.EFFICIENCY_AXES[x].lower()} and {axes[y]}."))
            continue
        overlay = tables.published_on_axis(published, x, f.resolution) if y == "miou" else None
        fig = charts.tradeoff_figure(plotted, x, y=y, y_label=axes[y], published=overlay,
                                     x_label=tables.axis_label(x, f.setup),
                                     recommended=f.rec.ranked[0]["run_id"] if f.rec.ranked else None)
        caption = _front_text(plotted, x, y, axes, f.labels)
        if overlay is not None and not overlay.empty:
            caption += " " + tables.published_caption(published, overlay, x, y, f.dataset, f.resolution)
        _name_points(fig, f)
        axis = tables.EFFICIENCY_AXES[x]
        out.append(figs.html(fig, caption, f"{axes[y]} against {axis[0].lower()}{axis[1:]}"))
    out.append("</section>")
    return "\n".join(out)


def _legend_right(fig: go.Figure) -> go.Figure:
    """The legend beside the chart rather than under it, where it would squeeze the plot."""
    return fig.update_layout(legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top"))


def _bars_by_model(fig: go.Figure, names) -> go.Figure:
    """A bar chart with one group per model made tall enough for the model names slanted under its bars
    (6 px per character of the longest, past four models), its legend beside it."""
    names = list(dict.fromkeys(names))
    extra = 6 * max(map(len, names)) if len(names) > 4 else 0
    return _legend_right(fig.update_layout(height=(fig.layout.height or 380) + extra))


def _robustness_table(summary: pd.DataFrame) -> str:
    groups = [g for g in tables.GROUPS if summary[g].notna().any()]
    head = ["Model", "clean mIoU", "mPC", "rPC", *[f"{escape(g)}<br><small>mIoU</small>" for g in groups]]
    body = [[escape(r["run"]), _num(r["clean_miou"], ".3f"), _num(r["mpc"], ".3f"), _num(r["rpc"], ".1%"),
             *[_num(r[g], ".3f") for g in groups]] for _, r in summary.iterrows()]
    return _table(head, body, set(range(1, len(head))))


def _corruptions(f: _Facts, figs: _Figures) -> str:
    """mPC, rPC and the mIoU per corruption group of each run's latest sweep, or a note that none was run."""
    latest = tables.latest_sweeps(f.store.robustness(f.ids, latest=True), f.labels, f.dataset)
    if not latest:
        return _p("No corruption sweep of these models (`python -m engine robustness --variant NAME`).")
    summary = tables.robustness_summary(latest, f.labels)
    colors = charts.run_colors(summary["run"])
    what = (f"{'; '.join(dict.fromkeys(summary['corruptions']))} at severities "
            f"{'; '.join(dict.fromkeys(summary['severities']))}, on "
            f"{'; '.join(str(n) for n in dict.fromkeys(summary['num_images']))} {f.dataset} "
            f"{'; '.join(dict.fromkeys(summary['split']))} images "
            f"({'; '.join(dict.fromkeys(summary['library']))})")
    return "\n".join([
        "<h3>Corruptions</h3>", _robustness_table(summary),
        _p(f"Latest sweep of each model: {what}. mPC: the mean mIoU over the corruptions and severities; "
           "rPC = mPC / clean mIoU (1: nothing lost)."),
        figs.html(_bars_by_model(charts.mpc_figure(summary, colors), summary["run"])),
        figs.html(_legend_right(charts.group_retention_figure(tables.group_retention(latest, f.labels), colors)),
                  "The mean mIoU of each corruption group as a share of the clean mIoU.",
                  "Retention per corruption group")])


def _retained(value, clean) -> str:
    """' (81%)': `value` as a share of `clean`; '' when either is missing."""
    if value is None or clean is None or pd.isna(value) or pd.isna(clean) or not clean:
        return ""
    return f" ({value / clean:.0%})"


def _domain_shift(f: _Facts, figs: _Figures) -> str:
    """Each run's mIoU on other datasets and conditions, and its share of the clean mIoU."""
    frame = tables.domain_shift_frame(f.evaluations, f.labels, f.dataset)
    other = set(frame.loc[~frame["in_distribution"], "run_id"]) if not frame.empty else set()
    if not other:
        return _p(f"These models were evaluated on {f.dataset} only (`python -m engine evaluate --dataset acdc "
                  "--condition all` measures fog, night, rain and snow).")
    frame = frame[frame["run_id"].isin(other)]
    matrix = tables.domain_shift_matrix(frame)
    clean = tables.domain_label(f.dataset)
    domains = list(matrix.columns)
    body = [[escape(run)] + [_num(r[d], ".3f") + ("" if d == clean else _retained(r[d], r.get(clean)))
                             for d in domains] for run, r in matrix.iterrows()]
    return "\n".join([
        "<h3>Other streets: datasets and conditions</h3>",
        _table(["Model", *[escape(d) for d in domains]], body, set(range(1, len(domains) + 1))),
        _p(f"mIoU of the latest evaluation of each model on each dataset and condition; in brackets its share of "
           f"the mIoU on {clean} (retention). A dash: not evaluated there."),
        figs.html(_bars_by_model(charts.domain_shift_figure(frame), frame["run"]),
                  heading="mIoU on each dataset and condition")])


def _robustness(f: _Facts, figs: _Figures) -> str:
    return "\n".join(['<section class="major"><h2>Robustness</h2>', _corruptions(f, figs), _domain_shift(f, figs),
                      "</section>"])


def _deployment(f: _Facts) -> str:
    """Pruned and INT8 models against the model each was made from: Δ mIoU, size and latency ratios."""
    derived = f.frame[f.frame["parent_run_id"].notna()]
    out = [f'<section{"" if derived.empty else " class=major"}><h2>Deployment variants</h2>']
    if derived.empty:
        out.append(_p("No pruned or INT8 variant was made of these models (`python -m engine compress`)."))
    else:
        head = ["Model", "Made from", "Method", "mIoU", "Δ mIoU", "Size (MB)", "Δ size", "Latency (ms)", "Δ latency"]
        body = [[escape(r.variant), _str(r.parent_variant), escape(tables.method_text(r.method, r.ratio)),
                 _num(r.miou, ".3f"), _num(r.delta_miou, "+.3f"), _num(r.size_mb, ".1f"), _times(r.size_ratio),
                 _num(r.latency_ms, ".1f"), _times(r.latency_ratio)]
                for r in derived.itertuples()]
        out += [_table(head, body, set(range(3, 9))),
                _p(f"Δ: against the model it was made from (mIoU difference; size and latency as ratios, latency "
                   f"on {f.rec.setup_label or 'the same setup'}; a dash when either was not measured there).")]
    out.append("</section>")
    return "\n".join(out)


def _published(f: _Facts) -> str:
    """The published results (papers, model zoos) in a table of their own, each with its source."""
    published = f.published
    out = ["<section><h2>Published results</h2>"]
    if published.empty:
        out.append(_p("No published results in the store (`python -m engine published --load`)."))
    else:
        head = ["Model", "mIoU", "Params (M)", "GFLOPs", "FPS", "Crop", "Schedule", "Source"]
        body = [[_str(r.model), _num(r.miou, ".3f"), _num(r.params_m, ".1f"), _str(r.gflops_label),
                 _str(r.fps_label), _str(r.crop), _str(r.schedule), _link(r.source, r.url)]
                for r in published.itertuples()]
        note = ("As their sources report them (Cityscapes val, single scale), not measured here: never ranked with "
                "the models above. Each cost is stated with the device and resolution it holds for.")
        if f.dataset != "cityscapes":
            note += (f" The models above were evaluated on {f.dataset}: these are a reference, not a like-for-like "
                     "comparison.")
        out += [_table(head, body, {1, 2}), _p(note)]
    out.append("</section>")
    return "\n".join(out)


def _per_class(f: _Facts, figs: _Figures) -> str:
    matrix = tables.class_iou_matrix(f.store.class_iou_table(f.ids), f.labels)
    out = ['<section class="major"><h2>Per-class IoU</h2>']
    if matrix.empty:
        out.append(_p("No per-class results recorded for these models."))
    else:
        out.append(figs.html(charts.class_iou_heatmap(matrix),
                             "IoU of each class in the latest evaluation of each model; a blank: the class does "
                             "not occur in the evaluated images."))
    out.append("</section>")
    return "\n".join(out)


# ---------------------------------------------------------------- examples

def _kept_pair(f: _Facts) -> tuple[dict, dict] | None:
    """The latest evaluations with kept predictions of the two best models that both have them on one
    dataset, condition, split and data folder (the training dataset without a condition first)."""
    rank = {rid: i for i, rid in enumerate(f.ids)}   # best mIoU first
    kept = {}
    for ev in f.evaluations:  # oldest first: the latest wins
        if ev["run_id"] in rank and ev.get("predictions_dir") and Path(ev["predictions_dir"]).is_dir():
            kept[(ev["dataset"], ev["condition"] or "", ev["split"], ev.get("data_root") or "", ev["run_id"])] = ev
    groups: dict[tuple, list[dict]] = {}
    for key, ev in kept.items():
        groups.setdefault(key[:4], []).append(ev)
    for key in sorted(groups, key=lambda k: ((k[0], k[1]) != (f.dataset, ""), k)):
        if len(groups[key]) >= 2:
            a, b = sorted(groups[key], key=lambda ev: rank[ev["run_id"]])[:2]
            return a, b
    return None


def _kept(ev: dict, stem: str) -> np.ndarray | None:
    from engine.evaluate import read_label_png

    path = Path(ev["predictions_dir"]) / f"{stem}.png"
    return read_label_png(path) if path.is_file() else None


def _most_disagreed(a: dict, b: dict, stems: list[str], n: int) -> list[tuple[str, float]]:
    """The `n` of `stems` whose kept label maps (of evaluations `a` and `b`) differ on the largest share
    of pixels, as (stem, share), most first (ties: by name); images either did not keep are skipped."""
    scored = []
    for stem in sorted(stems):
        la, lb = _kept(a, stem), _kept(b, stem)
        if la is not None and lb is not None and la.shape == lb.shape:
            scored.append((stem, float(np.mean(la != lb))))
    return sorted(scored, key=lambda s: (-s[1], s[0]))[:n]


def _png(rgb: np.ndarray) -> str:
    """An <img> of an RGB uint8 image as an embedded PNG."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ReportError("cannot encode an example image as PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.tobytes()).decode()}">'


def _panels(image: np.ndarray, la: np.ndarray, lb: np.ndarray) -> list[np.ndarray]:
    """[image, A over it, B over it, where they differ (white over the darkened image)], at most
    IMAGE_WIDTH wide."""
    h, w = la.shape
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    scale = min(1.0, IMAGE_WIDTH / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    la, lb = (cv2.resize(x, size, interpolation=cv2.INTER_NEAREST) for x in (la, lb))
    mask = render.disagreement(la, lb)
    shaded = (render.grey(image) * 0.35).astype(np.uint8)
    shaded[mask] = 255
    return [image, render.overlay(image, la, 0.7), render.overlay(image, lb, 0.7), shaded]


def _legend(*label_maps: np.ndarray) -> str:
    present = sorted(set().union(*(np.unique(m).tolist() for m in label_maps)) & set(range(len(CLASS_NAMES))))
    return '<p class="note">' + "".join(
        f'<span class="chip" style="background:rgb({",".join(str(v) for v in PALETTE[c].tolist())})"></span>'
        f"{escape(CLASS_NAMES[c])}" for c in present) + "</p>"


def _example(data, index: dict[str, int], a: dict, b: dict, names: tuple[str, str], stem: str, share: float,
             scores: dict) -> str:
    image, _ = data.load(index[stem])
    la, lb = _kept(a, stem), _kept(b, stem)
    panels = _panels(image, la, lb)
    captions = ["Image", f"A: {names[0]}", f"B: {names[1]}", "Where they disagree (white)"]
    grid = "".join(f"<figure>{_png(p)}<figcaption>{escape(c)}</figcaption></figure>" for p, c in zip(panels, captions))
    title = f"{stem}: the models disagree on {share:.1%} of the pixels"
    if scores[0].get(stem) is not None and scores[1].get(stem) is not None:
        title += f"; image mIoU A {scores[0][stem]:.3f}, B {scores[1][stem]:.3f}"
    return (f'<div class="example"><h3>{escape(title)}</h3><div class="examples">{grid}</div>'
            f"{_legend(la, lb)}</div>")


def _example_list(f: _Facts) -> str:
    """The examples, or a one-line note saying why there are none."""
    if f.examples <= 0:
        return _p("No examples asked for.")
    pair = _kept_pair(f)
    if pair is None:
        return _p("No examples: two models need kept predictions on the same images "
                  "(`python -m engine evaluate --keep-predictions`).")
    a, b = pair
    names = (f.labels[a["run_id"]], f.labels[b["run_id"]])
    where = f"{tables.domain_label(a['dataset'], a['condition'])} {a['split']}"
    if not a.get("data_kind") or not a.get("data_root"):
        return _p(f"No examples: evaluation #{a['id']} does not say where its images are.")
    try:
        from engine.data import open_dataset

        data = open_dataset(a["data_kind"], a["data_root"], a["split"], condition=a["condition"] or None,
                            label_format=a.get("label_format"))
    except (UserError, OSError) as e:
        return _p(f"No examples: the images of {where} are not readable here ({e}).")
    index = {s.stem: i for i, s in enumerate(data.samples)}
    rows_a, rows_b = f.store.image_results(a["id"]), f.store.image_results(b["id"])
    stems = {r["image"] for r in rows_a} & {r["image"] for r in rows_b} & set(index)
    chosen = _most_disagreed(a, b, list(stems), f.examples)
    if not chosen:
        return _p(f"No examples: {names[0]} and {names[1]} kept no prediction of the same image of {where}.")
    scores = ({r["image"]: r["miou"] for r in rows_a}, {r["image"]: r["miou"] for r in rows_b})
    intro = _p(f"A: {names[0]} (evaluation #{a['id']}), B: {names[1]} (evaluation #{b['id']}), their kept "
               f"predictions on {where}: the {len(chosen)} images where their labels differ on the most pixels.")
    return "\n".join([intro, *[_example(data, index, a, b, names, stem, share, scores) for stem, share in chosen]])


def _examples(f: _Facts) -> str:
    """For the two best models with kept predictions on the same images, the `examples` images where
    they disagree most: image | A | B | disagreement, as embedded PNGs; else a one-line note."""
    return "\n".join(['<section class="major"><h2>Examples: where the two best models disagree</h2>',
                      _example_list(f), "</section>"])


# ---------------------------------------------------------------- provenance

def _provenance(f: _Facts) -> str:
    """What every number stands on: data, setups, evaluation dates, code versions, store, runs."""
    by_id = {ev["id"]: ev for ev in f.evaluations}
    used = [by_id[r["evaluation_id"]] for r in f.rows if r["evaluation_id"] in by_id]
    shown = set(f.ids)
    others = [ev for ev in f.evaluations if ev["run_id"] in shown and ev["id"] not in {u["id"] for u in used}]
    data = sorted({(ev["dataset"], ev["condition"] or "", ev["split"], ev["num_images"], ev["eval_size"])
                   for ev in used + others})
    runs = {r["id"]: r for r in f.store.runs()}
    setups = f.store.cost_setups()
    precisions = {s["setup"]: sorted({c["precision"] for c in f.store.cost_profiles(f.ids, setup=s["setup"])})
                  for s in setups}
    dates = sorted(ev["created_at"] for ev in used + others)
    items = [
        "Data: " + "; ".join(f"{tables.domain_label(ds, cond)} {split}: {n} images at {size}"
                             for ds, cond, split, n, size in data) + ".",
        "Cost setups: " + ("; ".join(f"{s['label']} ({s['runs']} runs in the store; precisions "
                                     f"{', '.join(precisions[s['setup']]) or DASH})"
                                     + (" — the one this report uses" if s["setup"] == f.rec.setup else "")
                                     for s in setups) or "none recorded") + ".",
        f"Evaluations from {_when(dates[0])} to {_when(dates[-1])}." if dates else "No evaluation dates.",
        "Code versions: " + ", ".join(sorted({runs[i]["code_version"] for i in f.ids})) + ".",
        f"Results store: {_shown_url(f.store.url)}.",
    ]
    head = ["Run", "uid", "Model", "Trained on", "Code version", "Evaluation", "Evaluated"]
    body = [[str(r["run_id"]), f"<code>{escape(r['uid'])}</code>", escape(r["variant"]),
             escape(runs[r["run_id"]]["device"]), escape(runs[r["run_id"]]["code_version"]),
             f"#{r['evaluation_id']}", escape(_when(by_id[r["evaluation_id"]]["created_at"]))]
            for r in sorted(f.rows, key=lambda r: r["run_id"])]
    return "\n".join(['<section class="major"><h2>What every number stands on</h2><ul>',
                      *[f"<li>{escape(i)}</li>" for i in items], "</ul>", _table(head, body, {0}), "</section>"])


# ---------------------------------------------------------------- documents

def _document(store, *, dataset: str | None = None, run_ids: list[int] | None = None, title: str | None = None,
              budget: Budget | None = None, date: str | None = None, examples: int = 2) -> tuple[str, _Facts]:
    """(the HTML `build_report` gives, the facts it shows)."""
    f = _facts(store, dataset, run_ids, budget or Budget(), examples)
    figs = _Figures()
    title = title or f"Street-scene segmentation models: {f.dataset} results"
    body = [_header(f, title, date), _leaderboard(f, run_ids is not None), _tradeoffs(f, figs), _robustness(f, figs),
            _deployment(f), _published(f), _per_class(f, figs), _examples(f), _provenance(f)]
    doc = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                     f"<title>{escape(title)}</title>", f"<style>{CSS}</style>",
                     f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>", *body,
                     "</body></html>"])
    return doc, f


def build_report(store, *, dataset: str | None = None, run_ids: list[int] | None = None, title: str | None = None,
                 budget: Budget | None = None, date: str | None = None, examples: int = 2) -> str:
    """One self-contained HTML document (str) of the completed, evaluated runs of `dataset` (default:
    the dataset most runs were trained on) in `store` (`engine.store.Store`), only `run_ids` when
    given; the recommendation under `budget` (default: no limit); `date` printed under the title
    (none when None); `examples` images where the two best models disagree. ReportError when there
    is nothing evaluated to report on."""
    return _document(store, dataset=dataset, run_ids=run_ids, title=title, budget=budget, date=date,
                     examples=examples)[0]


def _chromium(chromium: str | None) -> str:
    """The Chromium executable: `chromium`, else $CHROMIUM, else Debian's; ReportError when absent."""
    path = browser.executable(chromium)
    found = path if os.path.isfile(path) else shutil.which(path)
    if not found:
        raise ReportError(f"no Chromium at {path} to print the PDF: install it with scripts/install-chromium.sh "
                          "(or apt-get install chromium), or set $CHROMIUM")
    return found


def _offline(route) -> None:
    """Let file:, data: and about: through; abort every other request (the report needs no network)."""
    if route.request.url.startswith(("file:", "data:", "about:")):
        route.continue_()
    else:
        route.abort()


RENDERED_JS = ("() => [...document.querySelectorAll('.plotly-graph-div')]"
               ".every(d => d.querySelector('svg.main-svg'))")


def write_pdf(html: str, pdf_path, *, chromium: str | None = None) -> Path:
    """Print the HTML to an A4 PDF at `pdf_path` with headless Chromium (`chromium`, $CHROMIUM or
    /usr/bin/chromium) through Playwright, the network blocked, once every chart has drawn; returns
    the path. ReportError when Chromium or Playwright is missing."""
    executable = _chromium(chromium)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ReportError("the PDF needs Playwright (pip install playwright); it drives the system's Chromium "
                          "and never downloads a browser") from None
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = browser.launch(p, executable)
        try:
            page = chromium.new_page()
            page.route("**/*", _offline)
            page.set_content(html, wait_until="load", timeout=RENDER_TIMEOUT_MS)
            page.wait_for_function(RENDERED_JS, timeout=RENDER_TIMEOUT_MS)
            page.pdf(path=str(pdf_path), format="A4", print_background=True,
                     margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
        finally:
            chromium.close()
    return pdf_path


def write_report(store, html_path=None, pdf_path=None, **kwargs) -> dict:
    """`build_report(store, **kwargs)`, written as HTML to `html_path` and/or printed to `pdf_path`;
    returns {"html": path or None, "pdf": path or None, "recommended": the model's name or None,
    "runs": the run ids shown, best mIoU first}."""
    doc, f = _document(store, **kwargs)
    if html_path is not None:
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(doc, encoding="utf-8")
    if pdf_path is not None:
        pdf_path = write_pdf(doc, pdf_path)
    return {"html": html_path, "pdf": pdf_path, "recommended": f.rec.recommended, "runs": f.ids}
