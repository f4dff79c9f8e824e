"""The Coverage map (dashboard/maps.py): `map_figure` and `thumbnail_uri` as plain functions, and the
component's served folder. The component itself runs in the browser test of the Coverage page
(tests/test_dashboard_browser.py: offline, the thumbnail on hover, the image on click)."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from PIL import Image

from dashboard import maps
from engine.coverage import INDICATOR_KEYS, INDICATOR_LABELS

TILES = "http://tiles.local/{z}/{x}/{y}.png"


def photo(k: int, lat, lon, area=None, **values) -> dict:
    shares = {key: round(0.05 + 0.1 * k + 0.01 * i, 4) for i, key in enumerate(INDICATOR_KEYS)}
    return {"source": f"img_{k}.jpg", "lat": lat, "lon": lon, "area": area, **shares, **values}


@pytest.fixture
def points() -> pd.DataFrame:
    """Five photos in Amsterdam; row 1 has no place, row 4 no Green View Index."""
    return pd.DataFrame([photo(0, 52.370, 4.890, "Centrum"), photo(1, None, None),
                         photo(2, 52.372, 4.893, "Centrum"), photo(3, 52.375, 4.897, "Oost"),
                         photo(4, 52.376, 4.899, "Oost", green_view_index=None)])


def square(lon: float, lat: float, d: float = 0.004) -> dict:
    return {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d],
                                                [lon, lat]]]}


@pytest.fixture
def areas() -> list[dict]:
    return [{"name": "Centrum", "geometry": square(4.888, 52.369), "images": 2,
             **{k: 0.60 for k in INDICATOR_KEYS}},
            {"name": "Oost", "geometry": {"type": "MultiPolygon", "coordinates": [
                square(4.895, 52.374)["coordinates"], square(4.905, 52.374, 0.002)["coordinates"]]},
             "images": 2, **{k: 0.10 for k in INDICATOR_KEYS}},
            {"name": "Empty", "geometry": square(4.880, 52.360), "images": 0, **{k: None for k in INDICATOR_KEYS}}]


def marker_traces(fig):
    return [t for t in fig.data if t.mode == "markers" and t.customdata is not None]


def strings(x):
    """Every string anywhere in a JSON value."""
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)


# ---------------------------------------------------------------- map_figure

def test_points_carry_their_rows_and_skip_the_unlocated(points):
    fig = maps.map_figure(points, "green_view_index")
    valued, missing = marker_traces(fig)
    assert {t.type for t in fig.data} == {"scatter"}
    assert list(valued.customdata) == [0, 2, 3] and list(missing.customdata) == [4]  # row 1: no place
    assert list(valued.x) == [4.890, 4.893, 4.897] and list(valued.y) == [52.370, 52.372, 52.375]
    assert list(valued.marker.color) == list(points.loc[[0, 2, 3], "green_view_index"])
    assert missing.marker.color == maps.NO_VALUE_COLOR
    assert valued.marker.colorscale and valued.marker.showscale
    assert (valued.marker.cmin, valued.marker.cmax) == pytest.approx((0.05, 0.35))
    assert INDICATOR_LABELS["green_view_index"] in valued.marker.colorbar.title.text
    assert valued.marker.colorbar.tickformat == ".0%"
    hover = valued.hovertext[2]
    assert hover.startswith("<b>img_3.jpg</b>") and "Green View Index: 35.0%" in hover and "area: Oost" in hover
    assert all(f"{INDICATOR_LABELS[k]}: " in hover for k in INDICATOR_KEYS)
    assert "no value" in missing.hovertext[0]


def test_plain_axes_are_longitude_and_latitude_at_the_right_aspect(points):
    fig = maps.map_figure(points, "road")
    assert fig.layout.xaxis.title.text == "longitude (°E)" and fig.layout.yaxis.title.text == "latitude (°N)"
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.yaxis.scaleratio == pytest.approx(1 / np.cos(np.radians(52.373)), rel=1e-3)
    assert not fig.layout.map.style  # no tiles, no map


def test_areas_are_shaded_by_their_mean_beneath_the_points(points, areas):
    fig = maps.map_figure(points, "green_view_index", areas=areas)
    shapes = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in shapes] == ["Centrum", "Oost", "Empty"]
    assert fig.data.index(shapes[-1]) < fig.data.index(marker_traces(fig)[0])  # drawn first: beneath
    lo, hi = 0.05, 0.60  # one scale: the points' values and the areas' means together
    assert (marker_traces(fig)[0].marker.cmin, marker_traces(fig)[0].marker.cmax) == pytest.approx((lo, hi))
    assert shapes[0].fillcolor == maps._translucent(maps.scale_color(0.60, lo, hi))
    assert shapes[1].fillcolor == maps._translucent(maps.scale_color(0.10, lo, hi))
    assert shapes[0].fillcolor != shapes[1].fillcolor
    assert shapes[1].x.count(None) == 1  # a multipolygon: two rings, one gap
    assert shapes[2].fillcolor == "rgba(0,0,0,0)" and shapes[2].line.color == maps.NO_VALUE_COLOR
    assert shapes[0].hoveron == "fills"
    assert shapes[0].text == "<b>Centrum</b><br>images: 2<br>Green View Index (mean): 60.0%"
    assert "no value" in shapes[2].text


def test_route_segments_take_the_colour_of_their_first_photo(points):
    fig = maps.map_figure(points, "sky_view", route=True)
    lines = [t for t in fig.data if t.name == "route"]
    segments = {}
    for t in lines:
        xs = list(t.x)
        for k in range(0, len(xs), 3):  # start, end, gap
            assert xs[k + 2] is None
            segments[(xs[k], xs[k + 1])] = t.line.color
    located = points.dropna(subset=["lat", "lon"])
    lo, hi = maps.value_range(located["sky_view"])
    lons, values = located["lon"].tolist(), located["sky_view"].tolist()
    assert segments == {(lons[k], lons[k + 1]): maps.scale_color(values[k], lo, hi) for k in range(3)}
    assert fig.data.index(lines[-1]) < fig.data.index(marker_traces(fig)[0])
    assert not [t for t in maps.map_figure(points, "sky_view").data if t.name == "route"]


def test_tiles_put_the_same_traces_on_a_map_of_that_server_alone(points, areas):
    fig = maps.map_figure(points, "green_view_index", areas=areas, route=True, tile_url=TILES)
    assert {t.type for t in fig.data} == {"scattermap"}
    assert list(marker_traces(fig)[0].customdata) == [0, 2, 3]
    style = fig.layout.map.style
    assert style["sources"]["tiles"] == {"type": "raster", "tiles": [TILES], "tileSize": 256}
    assert [layer["type"] for layer in style["layers"]] == ["raster"]
    assert fig.layout.map.center.lat == pytest.approx(52.3725, abs=0.01)
    assert fig.layout.map.center.lon == pytest.approx(4.8935, abs=0.02)
    assert 12 <= fig.layout.map.zoom <= 17
    urls = [s for s in strings(json.loads(pio.to_json(fig))) if re.search(r"[a-z]+://|//\w|www\.", s)]
    assert urls == [TILES]


def test_no_place_gives_a_message_not_an_error(points):
    for df in (points.iloc[0:0], points.assign(lat=None, lon=None), pd.DataFrame(columns=["source", "lat", "lon"])):
        fig = maps.map_figure(df, "green_view_index", tile_url=TILES)
        assert not fig.data
        assert "No image has a place" in fig.layout.annotations[0].text


def test_thumbnail_is_a_small_jpeg_data_uri():
    rgb = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    uri = maps.thumbnail_uri(rgb, max_side=120)
    assert uri.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (120, 72)
    small = Image.open(io.BytesIO(base64.b64decode(maps.thumbnail_uri(rgb[:50, :40]).split(",", 1)[1])))
    assert small.size == (40, 50)  # never enlarged


def test_component_folder_holds_the_page_its_script_and_plotly(tmp_path, monkeypatch):
    monkeypatch.setattr(maps.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = maps.component_dir()
    assert folder.parent == tmp_path / "segbench-components" / maps.plotly.__version__
    assert sorted(p.name for p in folder.iterdir()) == ["geo_map.js", "index.html", "plotly.min.js"]
    assert (folder / "index.html").read_bytes() == (maps.SOURCE / "index.html").read_bytes()
    plotly_js = Path(maps.plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert (folder / "plotly.min.js").stat().st_size == plotly_js.stat().st_size
    stamp = (folder / "geo_map.js").stat().st_mtime_ns
    assert maps.component_dir() == folder and (folder / "geo_map.js").stat().st_mtime_ns == stamp  # re-used
    (folder / "plotly.min.js").unlink()  # a broken folder is written again
    assert maps.component_dir() == folder and (folder / "plotly.min.js").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left


# ---------------------------------------------------------------- in a browser
