"""The Coverage page's map of street photos: plain functions from the page's rows to a plotly
figure, and `geo_map`, the small Streamlit component that shows it with each photo's thumbnail
on hover and tells the page which photo was clicked.

Offline by default: points and districts on plain longitude/latitude axes, nothing fetched from
any server. With a tile URL template (`engine.settings.map_tiles()`) the same traces go on a
MapLibre map over those raster tiles, and on no other server.

The component needs no build step: `components/geo_map/` holds an index.html and a small script
that speak Streamlit's component protocol by postMessage; at first use they are copied, with the
plotly.js of the installed plotly package, into a cache folder (`component_dir`) it is served from.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from PIL import Image
from plotly.colors import sample_colorscale

from engine.coverage import INDICATOR_KEYS, INDICATOR_LABELS
from engine.survey import COLORSCALE  # the exported route's colours too

NO_VALUE_COLOR = "#9ca3af"   # points, segments and areas whose indicator has no value
COLOR_STEPS = 100            # area fills and route segments take the scale's colour at 1 % steps
SOURCE = Path(__file__).resolve().parent / "components" / "geo_map"
FILES = ("index.html", "geo_map.js")
NO_PLACE = ("No image has a place: the photos carry no GPS position and no places file or GPX track<br>"
            "gave them one, so there is nothing to map.")


def thumbnail_uri(rgb: np.ndarray, max_side: int = 160) -> str:
    """A `data:image/jpeg;base64,...` copy of an RGB image, its longer side at most `max_side` px."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _value(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _pct(v) -> str:
    v = _value(v)
    return "no value" if v is None else f"{v:.1%}"


def value_range(values) -> tuple[float, float]:
    """(min, max) of the values that are not None/NaN, widened to at least 1 percentage point;
    (0, 1) when there are none. Points, areas and the route share it."""
    vals = [v for v in map(_value, values) if v is not None]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi - lo < 0.01:
        mid = (lo + hi) / 2
        lo, hi = max(0.0, mid - 0.005), max(0.0, mid - 0.005) + 0.01
    return lo, hi


def scale_color(v, lo: float, hi: float) -> str:
    """The colour of value `v` on COLORSCALE between lo and hi (in COLOR_STEPS steps); grey for None."""
    v = _value(v)
    if v is None:
        return NO_VALUE_COLOR
    at = round(min(1.0, max(0.0, (v - lo) / (hi - lo))) * COLOR_STEPS) / COLOR_STEPS
    return sample_colorscale(COLORSCALE, [at])[0]


def _translucent(rgb: str, alpha: float = 0.45) -> str:
    """'rgb(r, g, b)' -> 'rgba(r, g, b, alpha)'."""
    return f"rgba({rgb[rgb.index('(') + 1:-1]}, {alpha})"


def _point_hover(r: pd.Series, indicator: str) -> str:
    lines = [f"<b>{html.escape(str(r['source']))}</b>", f"<b>{INDICATOR_LABELS[indicator]}: {_pct(r[indicator])}</b>"]
    lines += [f"{INDICATOR_LABELS[k]}: {_pct(r[k])}" for k in INDICATOR_KEYS if k != indicator]
    area = r.get("area")
    if area is not None and not pd.isna(area):
        lines.append(f"area: {html.escape(str(area))}")
    return "<br>".join(lines)


def _rings(geometry: dict) -> list[list]:
    """The rings (exterior and holes) of a GeoJSON Polygon or MultiPolygon, as [lon, lat] lists."""
    if geometry.get("type") == "Polygon":
        return list(geometry["coordinates"])
    if geometry.get("type") == "MultiPolygon":
        return [ring for poly in geometry["coordinates"] for ring in poly]
    return []


def _ring_xy(geometry: dict) -> tuple[list, list]:
    """Longitudes and latitudes of all rings, one None between rings (plotly draws each as a shape)."""
    xs, ys = [], []
    for ring in _rings(geometry):
        if xs:
            xs.append(None)
            ys.append(None)
        xs += [float(p[0]) for p in ring]
        ys += [float(p[1]) for p in ring]
    return xs, ys


def _area_hover(a: dict, indicator: str) -> str:
    return (f"<b>{html.escape(str(a['name']))}</b><br>images: {a.get('images', 0)}<br>"
            f"{INDICATOR_LABELS[indicator]} (mean): {_pct(a.get(indicator))}")


def _zoom(lons: np.ndarray, lats: np.ndarray, width: int = 480, height: int = 480) -> float:
    """The web-mercator zoom at which the points fit a width x height px map (Streamlit's centred
    layout leaves the map about 500 px beside its colour bar)."""
    def merc(lat):
        s = math.sin(math.radians(max(-85.0, min(85.0, lat))))
        return math.log((1 + s) / (1 - s)) / (4 * math.pi)  # in world widths
    dx = (lons.max() - lons.min()) / 360
    dy = abs(merc(lats.max()) - merc(lats.min()))
    fits = [math.log2(px / 512 / d) for d, px in ((dx, width), (dy, height)) if d > 0]  # MapLibre: 512 px tiles
    return round(max(1.0, min(17.0, min(fits) - 0.3)) if fits else 16.0, 2)


def map_figure(points: pd.DataFrame, indicator: str, *, areas: list[dict] | None = None, route: bool = False,
               tile_url: str | None = None) -> go.Figure:
    """The photos on a map, coloured by `indicator` (an INDICATOR_KEYS key) on COLORSCALE, with a colour
    bar in percent; beneath them `areas` (districts or grid cells: {"name", "geometry": GeoJSON Polygon or
    MultiPolygon in lon/lat, "images", each indicator's mean}) filled with their mean on the same scale
    (grey outline, no fill, without a mean) and, with `route`, a line through the located photos in row
    order, each segment in the colour of its first photo.

    `points`: one row per photo (`source`, `lat`, `lon`, every indicator, optional `area`); rows without
    lat/lon are left out. Each point's customdata is its row position in `points` (0-based), photos whose
    indicator has no value are grey. Without `tile_url`: `go.Scatter` on longitude/latitude axes, the
    latitude axis stretched by 1/cos(latitude) so distances look the same both ways; with it:
    `go.Scattermap` over that raster tile server only. No located photo: a figure that says so."""
    label = INDICATOR_LABELS[indicator]
    df = points.reset_index(drop=True)
    located = df.dropna(subset=["lat", "lon"]) if len(df) else df
    fig = go.Figure()
    if located.empty:
        fig.add_annotation(text=NO_PLACE, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font=dict(size=14, color="#6b7280"))
        fig.update_layout(height=520, xaxis=dict(visible=False), yaxis=dict(visible=False),
                          margin=dict(l=10, r=10, t=30, b=10))
        return fig
    areas = areas or []
    lo, hi = value_range([*located[indicator], *(a.get(indicator) for a in areas)])
    tiles = tile_url is not None
    Trace = go.Scattermap if tiles else go.Scatter

    def xy(lons, lats) -> dict:
        return dict(lon=lons, lat=lats) if tiles else dict(x=lons, y=lats)

    for a in areas:  # beneath everything
        lons, lats = _ring_xy(a["geometry"])
        mean = _value(a.get(indicator))
        fill = dict(fill="toself", fillcolor=_translucent(scale_color(mean, lo, hi)) if mean is not None
                    else "rgba(0,0,0,0)")  # unfilled, but its hover still works
        text = _area_hover(a, indicator)
        line = dict(color="rgba(255,255,255,0.9)" if mean is not None else NO_VALUE_COLOR, width=1.5)
        if tiles:  # scattermap has no hover on fills: the name and mean show on the area's centre
            fig.add_trace(Trace(**xy(lons, lats), mode="lines", line=line, name=str(a["name"]), showlegend=False,
                                hoverinfo="skip", **fill))
            ring = (_rings(a["geometry"]) or [[[np.nan, np.nan]]])[0]
            ring = ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else ring  # GeoJSON repeats the first
            cx, cy = float(np.mean([p[0] for p in ring])), float(np.mean([p[1] for p in ring]))
            fig.add_trace(Trace(**xy([cx], [cy]), mode="markers", marker=dict(size=10, opacity=0), showlegend=False,
                                name=str(a["name"]), hovertext=[text], hovertemplate="%{hovertext}<extra></extra>"))
        else:
            fig.add_trace(Trace(**xy(lons, lats), mode="lines", line=line, name=str(a["name"]), showlegend=False,
                                hoveron="fills", text=text, hoverinfo="text", **fill))
    lons, lats = located["lon"].astype(float).tolist(), located["lat"].astype(float).tolist()
    values = [_value(v) for v in located[indicator]]
    if route and len(located) > 1:  # segments grouped by colour: one trace per colour, gaps between segments
        groups: dict[str, tuple[list, list]] = {}
        for k in range(len(located) - 1):
            gx, gy = groups.setdefault(scale_color(values[k], lo, hi), ([], []))
            gx += [lons[k], lons[k + 1], None]
            gy += [lats[k], lats[k + 1], None]
        for color, (gx, gy) in groups.items():
            fig.add_trace(Trace(**xy(gx, gy), mode="lines", line=dict(color=color, width=4), name="route",
                                showlegend=False, hoverinfo="skip"))
    rows = located.index.tolist()
    hover = [_point_hover(r, indicator) for _, r in located.iterrows()]
    have = [k for k, v in enumerate(values) if v is not None]
    missing = [k for k, v in enumerate(values) if v is None]
    colorbar = dict(title=dict(text=f"{label} (%)"), tickformat=".0%" if hi - lo >= 0.05 else ".1%", thickness=14)
    marker = dict(size=11, color=[values[k] for k in have] or [lo], colorscale=COLORSCALE, cmin=lo, cmax=hi,
                  showscale=True, colorbar=colorbar)
    if not tiles:
        marker["line"] = dict(width=1, color="white")
    fig.add_trace(Trace(**xy([lons[k] for k in have] or [None], [lats[k] for k in have] or [None]), mode="markers",
                        name=label, showlegend=False, marker=marker, customdata=[rows[k] for k in have] or None,
                        hovertext=[hover[k] for k in have], hovertemplate="%{hovertext}<extra></extra>"))
    if missing:
        fig.add_trace(Trace(**xy([lons[k] for k in missing], [lats[k] for k in missing]), mode="markers",
                            name=f"{label}: no value", showlegend=False, marker=dict(size=9, color=NO_VALUE_COLOR),
                            customdata=[rows[k] for k in missing], hovertext=[hover[k] for k in missing],
                            hovertemplate="%{hovertext}<extra></extra>"))
    revision = hashlib.sha1(json.dumps([lons, lats]).encode()).hexdigest()[:12]  # the view survives a new indicator
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=36, b=10), uirevision=revision,  # t: the modebar
                      hoverlabel=dict(align="left"), clickmode="event")
    if tiles:
        style = {"version": 8, "sources": {"tiles": {"type": "raster", "tiles": [tile_url], "tileSize": 256}},
                 "layers": [{"id": "tiles", "type": "raster", "source": "tiles"}]}
        x, y = np.array(lons), np.array(lats)
        fig.update_layout(map=dict(style=style, zoom=_zoom(x, y), center=dict(lon=float((x.min() + x.max()) / 2),
                                                                             lat=float((y.min() + y.max()) / 2))))
    else:
        ratio = 1 / math.cos(math.radians(float(np.clip(np.mean(lats), -85, 85))))
        fig.update_xaxes(title_text="longitude (°E)", zeroline=False, automargin=True)
        fig.update_yaxes(title_text="latitude (°N)", zeroline=False, automargin=True, scaleanchor="x",
                         scaleratio=ratio)
        fig.update_layout(plot_bgcolor="#f3f4f6")
    return fig


@lru_cache(maxsize=1)
def _digest() -> str:
    return hashlib.sha1(b"".join((SOURCE / f).read_bytes() for f in FILES)).hexdigest()[:12]


def _mine(path: Path) -> bool:
    return not hasattr(os, "getuid") or path.stat().st_uid == os.getuid()


@lru_cache(maxsize=1)
def _private_dir() -> Path:
    return _fill(Path(tempfile.mkdtemp(prefix="geo_map-")))


def component_dir() -> Path:
    """The folder the component is served from: index.html and geo_map.js from `components/geo_map/`
    with the installed plotly's plotly.min.js (hard-linked, or copied), in <temp>/segbench-components/
    <plotly version>/geo_map-<hash of the two files>/. Written at first use (in a fresh folder, then
    renamed into place), re-used while it is there; a private folder if another user's is in the way."""
    parent = Path(tempfile.gettempdir()) / "segbench-components" / plotly.__version__
    target = parent / f"geo_map-{_digest()}"
    if target.is_dir() and not _mine(target):
        return _private_dir()
    if all((target / f).is_file() for f in (*FILES, "plotly.min.js")):
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _fill(Path(tempfile.mkdtemp(prefix=".geo_map-", dir=parent)))
    try:
        os.rename(tmp, target)
    except OSError:  # already there: another process's (kept) or a broken one (replaced)
        if all((target / f).is_file() for f in (*FILES, "plotly.min.js")):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return target


def _fill(folder: Path) -> Path:
    for f in FILES:
        shutil.copyfile(SOURCE / f, folder / f)
    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    try:
        os.link(js, folder / "plotly.min.js")
    except OSError:  # another file system
        shutil.copyfile(js, folder / "plotly.min.js")
    folder.chmod(0o755)
    return folder


def geo_map(fig: go.Figure, thumbnails: list[str | None], *, key: str, height: int = 520) -> int | None:
    """Shows `fig` (a `map_figure`) full width, `height` px tall, in the geo_map component: hovering a
    point shows its thumbnail (`thumbnails[row]`, a data URI or None) with its figures; returns the row
    (the point's customdata) of the last point clicked, None until one is."""
    from streamlit.components import v1 as components

    component = components.declare_component("geo_map", path=str(component_dir()))
    spec = json.loads(pio.to_json(fig, validate=False))
    value = component(figure=spec, thumbnails=list(thumbnails), height=height, key=key, default=None)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
