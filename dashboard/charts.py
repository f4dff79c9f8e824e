"""Plotly figure builders: plain functions from the frames of `dashboard.tables` to figures.
Classes are always drawn in their official Cityscapes colours."""
from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.classes import CATEGORIES, CLASS_NAMES, PALETTE
from dashboard.tables import EFFICIENCY_AXES, GROUPS, METHOD_NAMES, method_text

CLASS_COLORS = [f"rgb({r},{g},{b})" for r, g, b in PALETTE.tolist()]
# A category is drawn in the colour of its first class (flat = road, vehicle = car, ...).
CATEGORY_COLORS = {cat: CLASS_COLORS[ids[0]] for cat, ids in CATEGORIES.items()}
ARCH_COLORS = {"deeplabv3_r50": "#1f77b4", "deeplabv3_r101": "#17becf", "hrnetv2_w48": "#d62728", "unet": "#2ca02c"}


def pareto_front(df: pd.DataFrame, x: str, y: str = "miou") -> pd.DataFrame:
    """The runs no other run beats on both axes (lower `x`, higher `y`), sorted by `x`.
    Rows with a missing x or y are never on the front."""
    pts = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    best, keep = float("-inf"), []
    for idx, val in pts[y].items():
        if val > best:
            keep.append(idx)
            best = val
    return pts.loc[keep]


METHOD_SYMBOLS = {"trained": "circle", "imported": "hexagon", "prune": "diamond", "int8": "square",
                  "prune+int8": "star"}
_RECIPE_HOVER = {"optimizer": "optimizer", "lr": "lr", "weight_decay": "weight decay", "dropout": "dropout",
                 "batch_size": "batch", "train_size": "train size", "epochs_label": "epochs", "profile": "profile"}


def _shown(v, fmt: str = "") -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, float) and v.is_integer() and not fmt:
        v = int(v)
    return format(v, fmt) if fmt else str(v)


def _point_hover(r: pd.Series, x: str, y: str, y_label: str, x_label: str | None = None) -> str:
    lines = [f"<b>{r['variant']}</b>", f"{x_label or EFFICIENCY_AXES[x]}: {r[x]:.4g}", f"{y_label}: {r[y]:.3f}"]
    if x == "latency_ms" and _shown(r.get("latency_setup")):
        lines.append(f"precision: {r['latency_setup'].rsplit(', ', 1)[-1]}")
    if y != "miou" and "miou" in r and _shown(r["miou"]):
        lines.append(f"mIoU (val): {r['miou']:.3f}")
    method = r.get("method") or "trained"
    lines.append(f"made by: {method_text(method, r.get('ratio'))}")
    if method not in ("trained", "imported") and _shown(r.get("parent_variant")):
        change = [f"mIoU {v:+.3f}" if k == "delta_miou" else f"{k.split('_')[0]} x{v:.2f}"
                  for k in ("delta_miou", "size_ratio", "latency_ratio") if _shown(v := r.get(k))]
        lines.append(f"from {r['parent_variant']}" + (f": {', '.join(change)}" if change else ""))
    recipe = [f"{label}: {v}" for c, label in _RECIPE_HOVER.items() if c in r and (v := _shown(r[c]))]
    return "<br>".join(lines + recipe)


def _published_hover(r: pd.Series, x: str) -> str:
    figure = f"{r[x]:.4g}" + (f" at {r['gflops_resolution']}" if x == "gflops" else "")
    lines = [f"<b>{r['model']}</b> · published", f"source: {r['source'] or r['url']}",
             f"{EFFICIENCY_AXES[x]}: {figure}", f"mIoU (Cityscapes val, single scale): {r['miou']:.3f}"]
    lines += [f"{label}: {v}" for c, label in (("backbone", "backbone"), ("schedule", "schedule"), ("crop", "crop"))
              if (v := _shown(r.get(c)))]
    return "<br>".join(lines + ["not measured here"])


def tradeoff_figure(df: pd.DataFrame, x: str, *, y: str = "miou", y_label: str = "mIoU (val)",
                    log_x: bool = False, published: pd.DataFrame | None = None,
                    x_label: str | None = None, recommended: int | None = None) -> go.Figure:
    """Accuracy (`y`: mIoU by default, or mPC, or the mIoU on another dataset) against an efficiency
    axis, one colour per architecture and one marker symbol per method (METHOD_SYMBOLS: trained,
    pruned, INT8, pruned + INT8), a line from each model to every model derived from it (when both
    are plotted), and the Pareto front (on these two axes) as a step line with a ring around each of
    its runs. Each point carries its run_id in customdata (clicking selects it); each line carries
    the run ids of its two ends (parent, derived).

    `published` (`tables.published_on_axis` rows, on the mIoU axis only) adds the papers' and model
    zoos' figures as hollow markers in their architecture's colour, one legend entry "<arch> ·
    published" each, without customdata (nothing to select) and outside the Pareto front, which is
    the measured runs' alone. `x_label`: the axis's name with what it holds for (`tables.axis_label`:
    the resolution, the setup); default EFFICIENCY_AXES[x]. `recommended`: the run_id the budget
    picker recommends, pointed at with an arrow when it is plotted."""
    df = df.assign(method=df["method"].fillna("trained") if "method" in df else "trained")
    fig = go.Figure()
    published = published if published is not None and y == "miou" else None
    archs = list(dict.fromkeys([*df["arch"], *([] if published is None else published["arch"].fillna("other"))]))
    colors = {a: ARCH_COLORS.get(a, px.colors.qualitative.Dark24[i % 24]) for i, a in enumerate(archs)}
    if "parent_run_id" in df:  # the lines first: drawn under the points
        by_id = df.set_index("run_id")
        for r in df[df["parent_run_id"].notna()].itertuples():
            parent = int(r.parent_run_id)
            if parent not in by_id.index:
                continue
            p = by_id.loc[parent]
            fig.add_trace(go.Scatter(x=[p[x], getattr(r, x)], y=[p[y], getattr(r, y)], mode="lines",
                                     name=f"{p['variant']} → {r.variant}", legendgroup=r.arch, showlegend=False,
                                     line=dict(color=colors[r.arch], width=1.5), opacity=0.55,
                                     customdata=[[parent], [r.run_id]], hoverinfo="skip"))
    methods = [m for m in METHOD_SYMBOLS if m in set(df["method"])] + sorted(set(df["method"]) - set(METHOD_SYMBOLS))
    for arch in archs:
        first = True
        for method in methods:
            g = df[(df["arch"] == arch) & (df["method"] == method)]
            if g.empty:
                continue
            fig.add_trace(go.Scatter(
                x=g[x], y=g[y], mode="markers", name=arch, legendgroup=arch, showlegend=first, legend="legend",
                marker=dict(color=colors[arch], symbol=METHOD_SYMBOLS.get(method, "x"), size=13,
                            line=dict(width=1, color="white")),
                customdata=g[["run_id"]].to_numpy().tolist(),  # lists: the chart's JSON keeps them readable
                hovertext=[_point_hover(r, x, y, y_label, x_label) for _, r in g.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>"))
            first = False
    if published is not None:
        for arch, g in published.assign(arch=published["arch"].fillna("other")).groupby("arch", sort=False):
            fig.add_trace(go.Scatter(
                x=g[x], y=g["miou"], mode="markers", name=f"{arch} · published", legendgroup=f"published {arch}",
                legend="legend", marker=dict(color=colors[arch], symbol="circle-open", size=13, line=dict(width=2)),
                hovertext=[_published_hover(r, x) for _, r in g.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>"))
    derived = methods != ["trained"]
    if derived:  # the key to the symbols, in a legend of its own
        for method in methods:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=METHOD_NAMES.get(method, method),
                                     legend="legend2", legendgroup=f"method {method}", hoverinfo="skip",
                                     marker=dict(color="#6b7280", symbol=METHOD_SYMBOLS.get(method, "x"), size=11)))
    front = pareto_front(df, x, y)
    if len(front):  # a ring around each run on the front, so that a front of one run shows too
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines+markers", name="Pareto front",
                                 line=dict(color="rgba(90,90,90,0.7)", dash="dash", shape="hv"),
                                 marker=dict(symbol="circle-open", size=22, color="rgba(90,90,90,0.7)"),
                                 customdata=front[["run_id"]], hoverinfo="skip"))  # a click on a ring picks its run
    pick = df[df["run_id"] == recommended] if recommended is not None else df.iloc[0:0]
    if len(pick):
        r = pick.iloc[0]
        at = math.log10(r[x]) if log_x and r[x] > 0 else r[x]  # on a log axis plotly places annotations in log10
        fig.add_annotation(x=at, y=r[y], text="recommended", showarrow=True, arrowhead=2, ax=0, ay=-40,
                           font=dict(color="#15803d"), arrowcolor="#15803d")
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=10), clickmode="event+select",
                      yaxis_tickformat=".3f", hoverlabel=dict(align="left"),
                      legend=dict(title_text="Architecture" if derived else "", y=1, yanchor="top"))
    if derived:
        fig.update_layout(legend2=dict(title_text="Method", y=0, yanchor="bottom", x=1.02, xanchor="left"))
    fig.update_xaxes(title_text=x_label or EFFICIENCY_AXES[x], type="log" if log_x else None)
    fig.update_yaxes(title_text=y_label, rangemode="nonnegative")
    return fig


def curves_figure(epochs: pd.DataFrame) -> go.Figure:
    """Training curves: loss (train solid, val dotted) and val mIoU per epoch, one colour per run."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Loss (solid: train, dotted: validation)", "Validation mIoU"))
    palette = px.colors.qualitative.Plotly
    for i, (run, g) in enumerate(epochs.groupby("run", sort=False)):
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["train_loss"], name=run, legendgroup=run,
                                 line=dict(color=color), mode="lines+markers"), row=1, col=1)
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["val_loss"], name=f"{run} (val)", legendgroup=run,
                                 line=dict(color=color, dash="dot"), mode="lines+markers", showlegend=False),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["val_miou"], name=run, legendgroup=run, showlegend=False,
                                 line=dict(color=color), mode="lines+markers"), row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def _class_color_strip(fig: go.Figure, y0: float = 1.01, y1: float = 1.05) -> None:
    for i, color in enumerate(CLASS_COLORS):
        fig.add_shape(type="rect", xref="x", yref="paper", x0=i - 0.5, x1=i + 0.5, y0=y0, y1=y1,
                      fillcolor=color, line=dict(width=0))


def _class_heatmap(matrix: pd.DataFrame, *, colorscale: str, colorbar: dict, hover: str) -> go.Figure:
    """Rows x 19 classes in [0, 1], values written in the cells, under the strip of class colours."""
    text = matrix.map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    fig = go.Figure(go.Heatmap(z=matrix.values, x=list(range(len(CLASS_NAMES))), y=list(matrix.index),
                               text=text.values, texttemplate="%{text}", zmin=0, zmax=1, colorscale=colorscale,
                               colorbar=colorbar, customdata=[CLASS_NAMES] * len(matrix),
                               hovertemplate="%{y}<br>%{customdata}: " + hover + "<extra></extra>"))
    fig.update_xaxes(tickvals=list(range(len(CLASS_NAMES))), ticktext=CLASS_NAMES, tickangle=-45)
    fig.update_yaxes(autorange="reversed")
    _class_color_strip(fig)
    fig.update_layout(height=max(260, 60 + 34 * len(matrix)), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def class_iou_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """Runs x 19 classes, IoU in [0, 1]; a strip of class colours above the columns; blank = class
    absent from the evaluated split."""
    return _class_heatmap(matrix, colorscale="Viridis", colorbar=dict(title="IoU"), hover="IoU %{z:.3f}")


def class_diff_figure(matrix: pd.DataFrame, a: str, b: str) -> go.Figure:
    """Per-class IoU of run b minus run a, each bar in its class colour."""
    diff = matrix.loc[b] - matrix.loc[a]
    hover = [f"{n}<br>{a}: {'n/a' if pd.isna(ia) else f'{ia:.3f}'}<br>{b}: {'n/a' if pd.isna(ib) else f'{ib:.3f}'}"
             for n, ia, ib in zip(CLASS_NAMES, matrix.loc[a], matrix.loc[b])]
    fig = go.Figure(go.Bar(x=CLASS_NAMES, y=diff.values, marker_color=CLASS_COLORS,
                           marker_line=dict(color="rgba(0,0,0,0.35)", width=1),
                           hovertext=hover, hovertemplate="%{hovertext}<br>difference %{y:+.3f}<extra></extra>"))
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), yaxis_title="IoU difference (B − A)",
                      title=dict(text=f"B: {b}  −  A: {a}", font=dict(size=13)),
                      yaxis_tickformat="+.2f", xaxis_tickangle=-45)
    return fig


def class_share_figure(rows: list[dict], title: str = "") -> go.Figure:
    """Pixel share of each class (coverage rows of one source and model), in class colours, largest first."""
    df = pd.DataFrame(rows).sort_values("share")
    fig = go.Figure(go.Bar(x=df["share"], y=df["class_name"], orientation="h",
                           marker_color=[CLASS_COLORS[c] for c in df["class_id"]],
                           marker_line=dict(color="rgba(0,0,0,0.35)", width=1),
                           customdata=df["category"],
                           hovertemplate="%{y} (%{customdata}): %{x:.2%}<extra></extra>"))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title or None,
                      xaxis_tickformat=".0%", xaxis_title="share of pixels")
    return fig


def category_share_figure(summary: pd.DataFrame) -> go.Figure:
    """One stacked bar per image: the share of each category (summary rows from engine.coverage)."""
    fig = go.Figure()
    for cat, color in CATEGORY_COLORS.items():
        fig.add_trace(go.Bar(x=summary["source"], y=summary[f"share_{cat}"], name=cat, marker_color=color,
                             hovertemplate=f"%{{x}}<br>{cat}: %{{y:.1%}}<extra></extra>"))
    fig.update_layout(barmode="stack", height=380, margin=dict(l=10, r=10, t=10, b=10), yaxis_tickformat=".0%",
                      yaxis_range=[0, 1], legend=dict(orientation="h", y=-0.3))
    return fig


def benchmark_figure(bench: pd.DataFrame) -> go.Figure:
    """End-to-end video frames per second per variant: the baseline, and one bar per fast-path setup
    (backend, precision, batch); one panel per frame size."""
    bench = bench.assign(setup=bench["backend"] + " " + bench["precision"] + ", batch " + bench["batch_size"].astype(str))
    sizes = list(dict.fromkeys(bench["size"]))
    setups = list(dict.fromkeys(bench["setup"]))
    colors = dict(zip(setups, ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"] * 3))
    fig = make_subplots(rows=1, cols=len(sizes), subplot_titles=sizes, shared_yaxes=True)
    for i, size in enumerate(sizes, start=1):
        part = bench[bench["size"] == size]
        base = part.groupby("variant", sort=False)["baseline_fps"].last()  # the latest baseline of each variant
        fig.add_trace(go.Bar(x=base.index, y=base.values, name="baseline (eager fp32, 1 frame)", marker_color="#9e9e9e",
                             showlegend=i == 1, legendgroup="baseline",
                             hovertemplate="%{x}<br>baseline %{y:.2f} fps<extra></extra>"), row=1, col=i)
        for setup, g in part.groupby("setup", sort=False):
            fig.add_trace(go.Bar(x=g["variant"], y=g["fast_fps"], name=f"fast: {setup}", marker_color=colors[setup],
                                 showlegend=i == 1, legendgroup=setup, customdata=g[["speedup", "agreement"]],
                                 hovertemplate="%{x}<br>%{y:.2f} fps<br>speedup x%{customdata[0]:.2f}, "
                                               "agreement %{customdata[1]:.2%}<extra></extra>"), row=1, col=i)
    fig.update_yaxes(title_text="frames per second (end to end)", col=1)
    fig.update_layout(barmode="group", height=420, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.35))
    return fig


# ---- robustness ----

RUN_PALETTE = px.colors.qualitative.Plotly
DOMAIN_PALETTE = ["#4c566a", "#88c0d0", "#5e81ac", "#ebcb8b", "#a3be8c", "#d08770", "#b48ead", "#bf616a"]


def run_colors(runs) -> dict[str, str]:
    """One colour per run label, the same in every robustness chart."""
    return {r: RUN_PALETTE[i % len(RUN_PALETTE)] for i, r in enumerate(dict.fromkeys(runs))}


def severity_figure(curves: pd.DataFrame, colors: dict[str, str] | None = None, wrap: int = 4) -> go.Figure:
    """Small multiples of `tables.severity_curves`: one panel per corruption (its group in the title),
    mIoU against severity (0 = clean), one line per run."""
    corruptions = list(dict.fromkeys(curves["corruption"]))
    groups = dict(zip(curves["corruption"], curves["group"]))
    wrap = max(1, min(wrap, len(corruptions)))
    fig = px.line(curves, x="severity", y="miou", color="run", facet_col="corruption", facet_col_wrap=wrap,
                  facet_row_spacing=0.12 if len(corruptions) > wrap else 0.03, facet_col_spacing=0.04,
                  markers=True, color_discrete_map=colors or run_colors(curves["run"]),
                  category_orders={"corruption": corruptions}, custom_data=["corruption"],
                  labels={"miou": "mIoU", "severity": "severity", "run": "Run"})
    fig.for_each_annotation(lambda a: a.update(text=f"{a.text.split('=', 1)[-1]} ({groups.get(a.text.split('=', 1)[-1], '')})"))
    fig.update_traces(hovertemplate="%{customdata[0]}, severity %{x}: mIoU %{y:.3f}<extra>%{fullData.name}</extra>")
    fig.update_xaxes(tickvals=[0, 1, 2, 3, 4, 5], ticktext=["clean", "1", "2", "3", "4", "5"], range=[-0.3, 5.3],
                     title_text="")
    top = curves["miou"].max()
    fig.update_yaxes(range=[0, min(1.0, top * 1.15) if top == top and top > 0 else 1.0], tickformat=".2f")
    rows = -(-len(corruptions) // wrap)
    fig.update_layout(height=110 + 230 * rows, margin=dict(l=10, r=10, t=60, b=10), legend_title_text="",
                      legend=dict(orientation="h", y=0.99, yanchor="top", x=0, xanchor="left", yref="container"))
    return fig


def mpc_figure(summary: pd.DataFrame, colors: dict[str, str] | None = None) -> go.Figure:
    """Per run, from `tables.robustness_summary`: clean mIoU (grey) next to mPC (the run's colour),
    and rPC = mPC / clean mIoU."""
    colors = colors or run_colors(summary["run"])
    run_colours = [colors[r] for r in summary["run"]]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Clean mIoU and mPC (mean mIoU under corruptions)", "rPC = mPC / clean mIoU"))
    fig.add_trace(go.Bar(x=summary["run"], y=summary["clean_miou"], name="clean mIoU", marker_color="#c8ccd4",
                         text=summary["clean_miou"], texttemplate="%{text:.3f}", textposition="outside",
                         hovertemplate="%{x}<br>clean mIoU %{y:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=summary["run"], y=summary["mpc"], name="mPC", marker_color=run_colours,
                         text=summary["mpc"], texttemplate="%{text:.3f}", textposition="outside",
                         hovertemplate="%{x}<br>mPC %{y:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=summary["run"], y=summary["rpc"], name="rPC", marker_color=run_colours, showlegend=False,
                         text=summary["rpc"], texttemplate="%{text:.0%}", textposition="inside",
                         insidetextanchor="end",
                         hovertemplate="%{x}<br>rPC %{y:.1%}<extra></extra>"), row=1, col=2)
    fig.add_hline(y=1, line_dash="dot", line_color="grey", row=1, col=2)
    top = max([1.0, *summary["rpc"].dropna()]) * 1.15
    fig.update_yaxes(title_text="mIoU", tickformat=".2f", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, top], row=1, col=2)
    fig.update_layout(barmode="group", height=380, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.2), uniformtext_minsize=9)
    return fig


def group_retention_figure(retention: pd.DataFrame, colors: dict[str, str] | None = None) -> go.Figure:
    """`tables.group_retention`: per corruption group, one bar per run, group mean mIoU / clean mIoU
    (1 = as good as on clean images)."""
    fig = go.Figure()
    colors = colors or run_colors(retention["run"])
    order = [g for g in GROUPS if g in set(retention["group"])]
    for run, g in retention.groupby("run", sort=False):
        g = g.set_index("group").reindex([o for o in order if o in set(g["group"])]).reset_index()
        fig.add_trace(go.Bar(x=g["group"], y=g["retention"], name=run, marker_color=colors[run],
                             customdata=g[["miou", "clean_miou"]], text=g["retention"], texttemplate="%{text:.0%}",
                             textposition="inside", insidetextanchor="end",
                             hovertemplate=f"{run}<br>%{{x}}: %{{y:.1%}} of clean<br>mIoU %{{customdata[0]:.3f}} "
                                           f"(clean %{{customdata[1]:.3f}})<extra></extra>"))
    fig.add_hline(y=1, line_dash="dot", line_color="grey", annotation_text="clean", annotation_position="top left")
    top = max([1.0, *retention["retention"].dropna()]) * 1.15
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    fig.update_layout(barmode="group", height=360, margin=dict(l=10, r=10, t=30, b=10), yaxis_tickformat=".0%",
                      yaxis_range=[0, top], yaxis_title="mIoU retained (group mean / clean)",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def class_retention_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """Rows (runs, or the groups of one run) x 19 classes: each class's IoU under corruption / its
    clean IoU, red where a class breaks, under the strip of class colours; blank = no clean IoU."""
    return _class_heatmap(matrix, colorscale="RdYlGn", colorbar=dict(title="retained", tickformat=".0%"),
                          hover="%{z:.1%} of its clean IoU")


def domain_shift_figure(frame: pd.DataFrame) -> go.Figure:
    """`tables.domain_shift_frame`: per run, its mIoU on each dataset and condition side by side,
    the training dataset (clean) first."""
    fig = go.Figure()
    domains = list(dict.fromkeys(frame["domain"]))
    runs = list(dict.fromkeys(frame["run"]))
    for i, (domain, g) in enumerate(frame.groupby("domain", sort=False)):
        name = f"{domain} (in-distribution)" if g["in_distribution"].all() else domain
        fig.add_trace(go.Bar(x=g["run"], y=g["miou"], name=name, marker_color=DOMAIN_PALETTE[i % len(DOMAIN_PALETTE)],
                             text=g["miou"], texttemplate="%{text:.3f}", textposition="outside",
                             customdata=g[["num_images"]],
                             hovertemplate=f"%{{x}}<br>{domain}: mIoU %{{y:.3f}} (%{{customdata[0]}} images)"
                                           "<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=runs)
    fig.update_layout(barmode="group", height=380, margin=dict(l=10, r=10, t=30, b=10), yaxis_title="mIoU",
                      yaxis_tickformat=".2f", yaxis_rangemode="tozero", legend=dict(orientation="h", y=-0.2),
                      legend_title_text="" if len(domains) else None)
    return fig


def _class_tick(c: int) -> str:
    """A class name behind a chip of its Cityscapes colour (plotly tick labels take inline styles)."""
    return f"<span style='color:{CLASS_COLORS[c]}'>■</span> {CLASS_NAMES[c]}"


def confusion_figure(shares, counts, *, hide_diagonal: bool = False, diverging: bool = False,
                     title: str = "") -> go.Figure:
    """A 19x19 confusion matrix, ground truth (rows) x prediction (columns), as shares of each
    ground-truth class's pixels (`shares`, row-normalised; `diverging`: a difference of two such
    matrices, in [-1, 1]) with the pixel `counts` in the hover. Class names carry their colours.
    An invisible marker sits on every cell, so a click selects it: x = prediction, y = ground truth."""
    import numpy as np

    z = np.array(shares, dtype=float)
    if hide_diagonal:
        np.fill_diagonal(z, np.nan)
    counts = np.asarray(counts)
    n = len(CLASS_NAMES)
    gt, pred = np.meshgrid(range(n), range(n), indexing="ij")
    word = "change in share" if diverging else "share"
    hover = [f"ground truth <b>{CLASS_NAMES[g]}</b> → predicted <b>{CLASS_NAMES[p]}</b><br>"
             + ("" if np.isnan(z[g, p]) else f"{word} of {CLASS_NAMES[g]} pixels: {z[g, p]:+.1%}" if diverging
                else f"{z[g, p]:.1%} of {CLASS_NAMES[g]} pixels")
             + f"<br>{counts[g, p]:,} pixels" for g, p in zip(gt.ravel(), pred.ravel())]
    scale = dict(colorscale="RdBu", zmid=0, zmin=-1, zmax=1) if diverging else dict(colorscale="Blues", zmin=0)
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n)), y=list(range(n)), hoverinfo="skip", xgap=1, ygap=1,
                               colorbar=dict(title=word, tickformat=".0%"), **scale))
    fig.add_trace(go.Scatter(x=pred.ravel(), y=gt.ravel(), mode="markers", showlegend=False,
                             marker=dict(symbol="square", size=22, opacity=0, color="black"),
                             hovertext=hover,
                             hovertemplate="%{hovertext}<extra></extra>"))
    ticks = [_class_tick(c) for c in range(n)]
    fig.update_xaxes(tickvals=list(range(n)), ticktext=ticks, tickangle=-45, title="predicted", side="bottom")
    fig.update_yaxes(tickvals=list(range(n)), ticktext=ticks, autorange="reversed", title="ground truth")
    fig.update_layout(height=640, margin=dict(l=10, r=10, t=40 if title else 10, b=10), hovermode="closest",
                      title=title or None, clickmode="event+select", dragmode=False)
    return fig


def image_scatter(pairs: pd.DataFrame, a: str, b: str, label: str = "mIoU") -> go.Figure:
    """One point per image: A's `value_a` against B's `value_b` (columns of `pairs`, with `image`
    and `folder`), the diagonal drawn; above it B does better. customdata: the image."""
    lo = float(min(pairs["value_a"].min(), pairs["value_b"].min(), 0.0)) if len(pairs) else 0.0
    hi = float(max(pairs["value_a"].max(), pairs["value_b"].max(), 1e-6)) if len(pairs) else 1.0
    pad = (hi - lo) * 0.04
    fig = go.Figure(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", hoverinfo="skip",
                               line=dict(color="grey", dash="dash", width=1), showlegend=False))
    better = pairs["value_b"] > pairs["value_a"]
    for name, mask, color in ((f"B better ({int(better.sum())})", better, "#d62728"),
                              (f"A better or equal ({int((~better).sum())})", ~better, "#1f77b4")):
        sub = pairs[mask]
        fig.add_trace(go.Scatter(
            x=sub["value_a"], y=sub["value_b"], mode="markers", name=name, customdata=list(sub["image"]),
            marker=dict(size=9, color=color, line=dict(color="white", width=0.5)),
            hovertext=[f"<b>{r.image}</b>" + (f" ({r.folder})" if r.folder else "") + f"<br>A: {r.value_a:.3f}<br>"
                       f"B: {r.value_b:.3f}<br>B − A: {r.value_b - r.value_a:+.3f}" for r in sub.itertuples()],
            hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), xaxis_title=f"{label} of A: {a}",
                      yaxis_title=f"{label} of B: {b}", legend=dict(orientation="h", y=1.08), hovermode="closest")
    fig.update_xaxes(range=[lo - pad, hi + pad], constrain="domain")
    fig.update_yaxes(range=[lo - pad, hi + pad], scaleanchor="x", scaleratio=1, constrain="domain")
    return fig
