"""Placing street photos on a map: EXIF GPS, locations CSV, GPX tracks, grid cells, districts and
GeoJSON output, all on real files the tests write."""
import io
import json
import math
import re
from datetime import datetime, timezone

import numpy as np
import pytest
import shapely
from geojson_pydantic import FeatureCollection
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational
from shapely.geometry import LinearRing

from engine import geo
from engine.geo import (EARTH_RADIUS_M, Area, GeoError, Place, Track, area_feature, area_of, areas_of, bearing_deg,
                        distance_m, feature_collection, grid_cell, line_feature, place_for, place_from_exif,
                        places_for, point_feature, read_districts, read_gpx, read_locations, route_samples,
                        to_geojson, track_position)
from engine.images import ImageError, decode_image, gps_tags

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180


# ---- EXIF GPS ------------------------------------------------------------------------------------------

def _jpeg(exif=None, size=(64, 48), fmt="JPEG") -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _gps_exif(lat_ref, lat_dms, lon_ref, lon_dms, direction=None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    gps = {1: lat_ref, 2: lat_dms, 3: lon_ref, 4: lon_dms}
    if direction is not None:
        gps.update({16: "T", 17: direction})
    exif[ExifTags.IFD.GPSInfo] = gps
    return exif


def test_exif_gps_of_a_jpeg_south_and_west_negative(tmp_path):
    exif = _gps_exif("S", (IFDRational(33), IFDRational(51), IFDRational(3553, 100)),
                     "W", (IFDRational(151), IFDRational(12), IFDRational(4012, 1000)), IFDRational(2705, 10))
    path = tmp_path / "sydney.jpg"
    path.write_bytes(_jpeg(exif))
    place = place_from_exif(gps_tags(path.read_bytes(), str(path)))
    assert place.lat == pytest.approx(-(33 + 51 / 60 + 35.53 / 3600), abs=1e-12)
    assert place.lon == pytest.approx(-(151 + 12 / 60 + 4.012 / 3600), abs=1e-12)
    assert place.direction == pytest.approx(270.5)


def test_exif_gps_north_east_without_direction_and_header_only():
    data = _jpeg(_gps_exif("N", (IFDRational(48), IFDRational(51), IFDRational(2950, 100)),
                           "E", (IFDRational(2), IFDRational(21), IFDRational(42, 10))), size=(256, 256))
    place = place_from_exif(gps_tags(data, "paris.jpg"))
    assert place == Place(pytest.approx(48 + 51 / 60 + 29.5 / 3600), pytest.approx(2 + 21 / 60 + 4.2 / 3600), None)
    truncated = data[: len(data) // 2]  # the pixels are cut off: the header alone is read
    assert place_from_exif(gps_tags(truncated, "cut.jpg")) == place
    with pytest.raises(ImageError):
        decode_image(truncated, "cut.jpg")


def test_images_without_gps_give_no_place():
    for data in (_jpeg(), _jpeg(fmt="PNG")):  # no EXIF at all
        assert gps_tags(data, "plain") == {} and place_from_exif({}) is None
    camera_only = Image.Exif()
    camera_only[0x010F] = "TestCam"
    assert gps_tags(_jpeg(camera_only), "camera.jpg") == {}
    assert gps_tags(_jpeg(b"Exif\x00\x00not a TIFF header at all"), "odd.jpg") == {}  # damaged EXIF: no place
    with pytest.raises(ImageError, match=r"^notes\.txt: unreadable"):
        gps_tags(b"just some text, not an image", "notes.txt")
    with pytest.raises(ImageError, match="empty"):
        gps_tags(b"", "empty.jpg")


def test_place_from_exif_reads_old_style_pairs_and_refuses_malformed_values():
    legacy = {1: b"N\x00", 2: ((48, 1), (51, 1), (2950, 100)), 3: b"E\x00", 4: ((2, 1), (21, 1), (42, 10)),
              17: (900, 2)}
    assert place_from_exif(legacy) == Place(pytest.approx(48.858194444), pytest.approx(2.351166667), 90.0)
    good = {1: "N", 2: (IFDRational(10), IFDRational(0), IFDRational(0)), 3: "E", 4: (IFDRational(20), 0, 0)}
    assert place_from_exif(good) == Place(10.0, 20.0)
    for bad in ({**good, 2: (IFDRational(10, 0), 0, 0)},   # zero denominator
                {**good, 4: ((20, 0), (0, 1), (0, 1))},     # zero denominator, pair form
                {**good, 2: (91, 0, 0)},                    # out of range
                {**good, 4: (180, 30, 0)},
                {**good, 1: "X"}, {k: v for k, v in good.items() if k != 1},  # no hemisphere
                {**good, 2: "forty"}, {**good, 2: (1, 2, 3, 4)}, {k: v for k, v in good.items() if k != 4}):
        assert place_from_exif(bad) is None, bad
    assert place_from_exif({**good, 17: IFDRational(1, 0)}).direction is None
    assert place_from_exif({**good, 17: "north"}).direction is None


# ---- locations CSV ----------------------------------------------------------------------------------------

def test_read_locations(tmp_path):
    path = tmp_path / "places.csv"
    path.write_bytes("\ufeff File , LAT,Lon,Direction,notes\n"
                     "a/one.jpg,48.85,2.35,90,first\n"
                     "two.jpg,-33.9,151.2,,\n"
                     "\n"
                     "three.jpg,,,,no gps\n"
                     "a/one.jpg, 48.85 , 2.35 ,450,listed again: the same place\n"
                     "four.jpg,10,20,-90\n".encode())
    assert read_locations(path) == {"a/one.jpg": Place(48.85, 2.35, 90.0), "two.jpg": Place(-33.9, 151.2),
                                    "four.jpg": Place(10.0, 20.0, 270.0)}


@pytest.mark.parametrize("text,line,reason", [
    ("file,lat\nx.jpg,1\n", 1, "no lon column"),
    ("name,latitude,longitude\n", 1, "no file, lat, lon column"),
    ("file,lat,lon\nx.jpg,1,2\ny.jpg,abc,2\n", 3, "lat 'abc' is not a number"),
    ("file,lat,lon\nx.jpg,nan,2\n", 2, "lat 'nan' is not a number"),
    ("file,lat,lon,direction\nx.jpg,1,2,left\n", 2, "direction 'left' is not a number"),
    ("file,lat,lon\nx.jpg,91,2\n", 2, "out of range"),
    ("file,lat,lon\nx.jpg,1,-180.5\n", 2, "out of range"),
    ("file,lat,lon\nx.jpg,1,\n", 2, "lon is empty"),
    ("file,lat,lon\n,1,2\n", 2, "no file name"),
    ("file,lat,lon\nx.jpg,1,2\n\ny.jpg,1,2\nx.jpg,1,3\n", 5, r"x\.jpg is listed again .*first on line 2"),
    ("file,lat,lon\nx.jpg,,\nx.jpg,1,2\n", 3, "listed again"),
])
def test_read_locations_errors_name_the_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(GeoError, match=rf"^{re.escape(str(path))}, line {line}: .*{reason}"):
        read_locations(path)


def test_read_locations_unreadable_files(tmp_path):
    with pytest.raises(GeoError, match="cannot read"):
        read_locations(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("file,lat,lon\ncaf\u00e9.jpg,1,2\n".encode("latin-1"))
    with pytest.raises(GeoError, match="not UTF-8"):
        read_locations(latin1)


def test_place_for_exact_path_then_unique_file_name():
    p1, p2, p3, p4 = (Place(float(i), float(i)) for i in range(1, 5))
    locations = {"/data/a/x.jpg": p1, "b/y.jpg": p2, "c/z.jpg": p3, "d/z.jpg": p4}
    assert place_for("/data/a/x.jpg", locations) == p1
    assert place_for("upload/x.jpg", locations) == p1
    assert place_for("y.jpg", locations) == p2
    assert place_for("C:\\photos\\y.jpg", locations) == p2
    assert place_for("c/z.jpg", locations) == p3      # exact, although the name is ambiguous
    assert place_for("e/z.jpg", locations) is None    # two entries are called z.jpg
    assert place_for("q.jpg", locations) is None
    assert places_for(["y.jpg", "z.jpg", "d/z.jpg"], locations) == [p2, None, p4]


# ---- GPX tracks -----------------------------------------------------------------------------------------

T = datetime(2024, 5, 1, 10, tzinfo=timezone.utc).timestamp()

GPX = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="segbench tests" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><name>drive</name>
    <trkseg>
      <trkpt lat="48.0" lon="2.0"><time>2024-05-01T10:00:00Z</time></trkpt>
      <trkpt lat="48.01" lon="2.0"><time>2024-05-01T10:00:10Z</time></trkpt>
      <trkpt lat="50.0" lon="5.0"><time>2024-05-01T10:00:10Z</time></trkpt>
      <trkpt lat="48.5" lon="2.5"></trkpt>
      <trkpt lat="48.01" lon="2.02"><time>2024-05-01T12:00:30+02:00</time></trkpt>
    </trkseg>
  </trk>
  <trk><trkseg><trkpt lat="47.99" lon="2.0"><time>2024-05-01T09:59:50</time></trkpt></trkseg></trk>
</gpx>
"""


def _gpx(tmp_path, text, name="track.gpx"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_gpx_orders_points_and_drops_duplicate_times(tmp_path):
    track = read_gpx(_gpx(tmp_path, GPX))
    assert track.times.tolist() == [T - 10, T, T + 10, T + 30]  # naive time read as UTC; +02:00 honoured
    assert track.lats.tolist() == [47.99, 48.0, 48.01, 48.01]   # the first point at T+10 kept, untimed skipped
    assert track.lons.tolist() == [2.0, 2.0, 2.0, 2.02]
    assert track.duration_s == 40.0


def test_track_position_interpolates_and_faces_the_segment(tmp_path):
    track = read_gpx(_gpx(tmp_path, GPX))
    north = track_position(track, T + 5)
    assert (north.lat, north.lon) == (pytest.approx(48.005), pytest.approx(2.0))
    assert north.direction == pytest.approx(0.0, abs=1e-9)
    east = track_position(track, T + 20)
    assert (east.lat, east.lon) == (pytest.approx(48.01), pytest.approx(2.01))
    assert east.direction == pytest.approx(90.0, abs=0.01)
    assert (track_position(track, T + 30).lat, track_position(track, T + 30).lon) == (48.01, 2.02)
    assert track_position(track, T - 10).lat == 47.99
    assert track_position(track, T - 10.5) is None and track_position(track, T + 30.5) is None
    assert track_position(track, math.nan) is None
    still = Track(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    assert track_position(still, 0.5) == Place(1.0, 2.0, None)


def test_track_position_crosses_the_antimeridian_the_short_way():
    track = Track(np.array([0.0, 2.0]), np.array([0.0, 0.0]), np.array([179.99, -179.99]))
    mid = track_position(track, 1.0)
    assert abs(mid.lon) == pytest.approx(180.0) and mid.direction == pytest.approx(90.0)
    assert track_position(track, 1.5).lon == pytest.approx(-179.995)


def test_read_gpx_uses_route_points_when_there_is_no_track(tmp_path):
    route = GPX.replace("<trkseg>", "").replace("</trkseg>", "").replace("trkpt", "rtept").replace("trk>", "rte>")
    assert read_gpx(_gpx(tmp_path, route)).lats.tolist() == [47.99, 48.0, 48.01, 48.01]


@pytest.mark.parametrize("text,reason", [
    ('<gpx version="1.1"><trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T10:00:00Z</time></trkpt>'
     '<trkpt lat="1" lon="3"></trkpt></trkseg></trk></gpx>', "1 distinct point time"),
    ('<gpx version="1.1"><trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T10:00:00Z</time></trkpt>'
     '<trkpt lat="1" lon="3"><time>2024-05-01T10:00:00Z</time></trkpt></trkseg></trk></gpx>', "1 distinct"),
    ("<html><body>a web page</body></html>", "0 distinct"),
    ("lat,lon\n1,2\n", "not a GPX file"),
    ('<gpx><trk><trkseg><trkpt lat="north" lon="2"></trkpt></trkseg></trk></gpx>', "not a GPX file"),
    ('<gpx><trk><trkseg><trkpt lat="95" lon="2"><time>2024-05-01T10:00:00Z</time></trkpt>'
     '<trkpt lat="1" lon="2"><time>2024-05-01T10:00:01Z</time></trkpt></trkseg></trk></gpx>', "out of range"),
])
def test_read_gpx_errors(tmp_path, text, reason):
    path = _gpx(tmp_path, text, "bad.gpx")
    with pytest.raises(GeoError, match=rf"^{re.escape(str(path))}: .*{reason}"):
        read_gpx(path)


def test_distance_and_bearing():
    assert distance_m(Place(10.0, 20.0), Place(11.0, 20.0)) == pytest.approx(EARTH_RADIUS_M * math.pi / 180,
                                                                             rel=1e-6)
    assert distance_m(Place(0.0, 0.0), Place(0.0, 1.0)) == pytest.approx(M_PER_DEG, rel=1e-6)
    assert distance_m(Place(48.85, 2.35), Place(48.85, 2.35, 45.0)) == 0.0
    a, b = Place(48.85, 2.35), Place(-33.9, 151.2)
    assert distance_m(a, b) == pytest.approx(distance_m(b, a)) == pytest.approx(16_960_000, rel=0.01)
    assert bearing_deg(Place(0.0, 0.0), Place(1.0, 0.0)) == 0.0
    assert bearing_deg(Place(0.0, 0.0), Place(0.0, 1.0)) == pytest.approx(90.0)
    assert bearing_deg(Place(1.0, 0.0), Place(0.0, 0.0)) == pytest.approx(180.0)
    assert bearing_deg(Place(0.0, 1.0), Place(0.0, 0.0)) == pytest.approx(270.0)
    assert bearing_deg(Place(0.0, 0.0), Place(0.0, 0.0, 90.0)) is None


def test_route_samples_every_n_metres_along_a_north_track():
    # North along lon 0: 100 m in the first 10 s, then 900 m in 100 s (metres are exact along a meridian).
    base = 1.7e9
    track = Track(np.array([base, base + 10, base + 110]), np.array([0.0, 100 / M_PER_DEG, 1000 / M_PER_DEG]),
                  np.zeros(3))
    expected = [0, 10 + 150 / 9, 10 + 400 / 9, 10 + 650 / 9, 110]  # at 0, 250, 500, 750, 1000 m
    assert route_samples(track, 250.0) == pytest.approx([base + t for t in expected], abs=1e-6)
    assert route_samples(track, 50.0)[:3] == pytest.approx([base, base + 5, base + 10], abs=1e-6)
    # From t=5 (50 m) to t=60 (550 m): 0, 250 and 500 m further on.
    assert route_samples(track, 250.0, start=base + 5, end=base + 60) == pytest.approx(
        [base + 5, base + 10 + 200 / 9, base + 60], abs=1e-6)
    assert route_samples(track, 400.0, start=base - 100)[0] == base  # clipped to the track
    assert route_samples(track, 250.0, start=base + 200) == []
    still = Track(np.array([0.0, 5.0, 9.0]), np.full(3, 45.0), np.full(3, 7.0))
    assert route_samples(still, 10.0) == [0.0]
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            route_samples(track, bad)


def test_a_track_refuses_unordered_times():
    with pytest.raises(ValueError, match="increasing"):
        Track(np.array([0.0, 0.0]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError):
        Track(np.array([0.0, 1.0]), np.zeros(3), np.zeros(2))


# ---- grid cells -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lat,lon,cell_m", [(0.0, 10.0001, 100.0), (60.0, 10.0001, 100.0), (60.2, -3.7, 500.0),
                                            (-33.9, -151.2, 250.0)])
def test_grid_cells_are_about_cell_m_square_and_hold_the_place(lat, lon, cell_m):
    place = Place(lat, lon)
    cell = grid_cell(place, cell_m)
    west, south, east, north = cell.geometry.bounds
    middle = (south + north) / 2
    assert distance_m(Place(middle, west), Place(middle, east)) == pytest.approx(cell_m, rel=0.01)
    assert distance_m(Place(south, west), Place(north, west)) == pytest.approx(cell_m, rel=0.01)
    assert cell.geometry.covers(shapely.Point(lon, lat))
    assert re.fullmatch(r"cell -?\d+,-?\d+", cell.name)
    assert grid_cell(Place(lat, lon), cell_m) == cell  # fixed grid: no dependence on other data


def test_grid_cells_near_places_share_a_cell_and_a_boundary_splits():
    cell = grid_cell(Place(48.85, 2.35), 100.0)
    assert cell.name == "cell 54318,1719"  # pinned: the grid must not move between versions
    centre = cell.geometry.centroid
    one_m = 1 / M_PER_DEG
    assert grid_cell(Place(centre.y, centre.x), 100.0).name == grid_cell(Place(centre.y + one_m, centre.x), 100.0).name
    assert grid_cell(Place(centre.y, centre.x + one_m), 100.0).name == cell.name
    west, south, east, north = cell.geometry.bounds
    assert grid_cell(Place(south - 1e-7, centre.x), 100.0).name != grid_cell(Place(south + 1e-7, centre.x), 100.0).name
    assert grid_cell(Place(centre.y, east - 1e-7), 100.0).name != grid_cell(Place(centre.y, east + 1e-7), 100.0).name
    assert grid_cell(Place(-0.0001, -0.0001), 100.0).name == "cell -1,-1"


def test_grid_cells_at_the_edges_of_the_map():
    for place in (Place(90.0, 10.0), Place(-90.0, -10.0), Place(0.0, 180.0), Place(0.0, -180.0), Place(89.9999, 0.0)):
        cell = grid_cell(place, 100.0)
        assert cell.geometry.is_valid and cell.geometry.area > 0 and cell.geometry.covers(
            shapely.Point(place.lon, place.lat)), place
        west, south, east, north = cell.geometry.bounds
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    with pytest.raises(ValueError):
        grid_cell(Place(0.0, 0.0), 0.0)


# ---- districts ------------------------------------------------------------------------------------------

NORTH = {"type": "Polygon", "coordinates": [  # exterior clockwise on purpose: the output must orient it
    [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]], [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75], [0.25, 0.25]]]}
SOUTH = {"type": "Polygon", "coordinates": [[[1, 0], [2, 0], [2, 1], [1, 1], [1, 0]]]}
POINT = {"type": "Point", "coordinates": [0.5, 0.5]}


def _feature(geometry, **properties):
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _geojson(tmp_path, doc, name="districts.geojson"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def districts(tmp_path):
    return _geojson(tmp_path, {"type": "FeatureCollection", "features": [
        _feature(NORTH, name="North", code=7), _feature(POINT, name="a bus stop"),
        _feature(SOUTH, name="South", code=8)]})


def test_read_districts_and_area_of(districts):
    areas = read_districts(districts)
    assert [a.name for a in areas] == ["North", "South"]
    assert area_of(Place(0.5, 1.0), areas) == "North"   # on the shared edge: the first in the file
    assert area_of(Place(0.5, 0.5), areas) is None      # in North's hole
    assert area_of(Place(0.25, 0.5), areas) == "North"  # on the hole's edge: the boundary counts
    assert area_of(Place(0.5, 1.5), areas) == "South"
    assert area_of(Place(0.0, 0.0), areas) == "North"   # a corner
    assert area_of(Place(5.0, 5.0), areas) is None
    assert areas_of([Place(0.5, 1.5), None, Place(0.9, 0.1)], areas) == ["South", None, "North"]
    assert area_of(Place(0.5, 1.5), []) is None
    assert [a.name for a in read_districts(districts, name_field="code")] == ["7", "8"]


def test_areas_of_agrees_with_shapely_covers_point_by_point(districts):
    areas = read_districts(districts)
    rng = np.random.default_rng(1)
    lats, lons = rng.uniform(-0.2, 1.2, 500), rng.uniform(-0.2, 2.2, 500)
    places = [Place(float(lat), float(lon)) for lat, lon in zip(lats, lons)]
    expected = [next((a.name for a in areas if a.geometry.covers(shapely.Point(p.lon, p.lat))), None) for p in places]
    assert areas_of(places, areas) == expected == [area_of(p, areas) for p in places]


def test_district_names_and_forms(tmp_path):
    multi = {"type": "MultiPolygon", "coordinates": [SOUTH["coordinates"], [[[3, 0], [4, 0], [4, 1], [3, 0]]]]}
    path = _geojson(tmp_path, {"type": "FeatureCollection", "features": [
        _feature(NORTH), _feature(POINT), _feature(multi, population=12, label="Docks"),
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5, 5], [6, 5], [6, 6], [5, 5]]]},
         "properties": None}]})
    areas = read_districts(path)
    assert [a.name for a in areas] == ["district 1", "Docks", "district 4"]
    assert areas[1].geometry.geom_type == "MultiPolygon" and area_of(Place(0.2, 3.5), areas) == "Docks"
    assert [a.name for a in read_districts(_geojson(tmp_path, SOUTH, "bare.geojson"))] == ["district 1"]
    single = _geojson(tmp_path, _feature(SOUTH, name="Only"), "one.geojson")
    assert [a.name for a in read_districts(single)] == ["Only"]


@pytest.mark.parametrize("doc,name_field,reason", [
    ({"type": "FeatureCollection", "features": [_feature(POINT, name="stop")]}, None, "no Polygon or MultiPolygon"),
    ({"type": "FeatureCollection", "features": [
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, name="Bow tie")]},
     None, r"district 'Bow tie' is not a valid polygon \(Self-intersection"),
    ({"type": "FeatureCollection", "features": [_feature(NORTH, name="A"), _feature(SOUTH, name="A")]}, None,
     r"two districts are named 'A' \(features 1 and 2\)"),
    ({"type": "FeatureCollection", "features": [_feature(NORTH, name="A"), _feature(SOUTH, name="B")]}, "code",
     "feature 1 has no 'code' property"),
    ({"type": "FeatureCollection", "features": [_feature(
        {"type": "Polygon", "coordinates": [[[261600, 6250500], [262600, 6250500], [262600, 6251500],
                                             [261600, 6250500]]]}, name="Metres")]}, None, "not in lon/lat"),
    ({"type": "FeatureCollection", "features": [_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
                                                         name="Short")]}, None, "malformed coordinates"),
    ({"type": "Topology", "objects": {}}, None, "no Polygon"),
    ("{not json", None, "not JSON"),
])
def test_read_districts_errors(tmp_path, doc, name_field, reason):
    path = _geojson(tmp_path, doc, "bad.geojson")
    with pytest.raises(GeoError, match=rf"^{re.escape(str(path))}(, line 1)?: .*{reason}"):
        read_districts(path, name_field)


# ---- GeoJSON --------------------------------------------------------------------------------------------

def test_geojson_collection_is_rfc7946(districts):
    north = read_districts(districts)[0]
    multi = Area("two", shapely.MultiPolygon([shapely.box(0, 0, 1, 1, ccw=False), shapely.box(2, 0, 3, 1)]))
    features = [
        point_feature(Place(48.85, 2.35, 90.0), {"source": "a.jpg", "share": np.float32(0.5), "pixels": np.int64(3),
                                                 "iou": float("nan"), "ratio": np.float64("inf"),
                                                 "shares": np.array([0.25, np.nan])}),
        point_feature(None, {"source": "b.jpg"}),
        line_feature([Place(48.85, 2.35), Place(48.86, 2.37)], {"name": "route"}),
        area_feature(north, {"name": "N\u00f6rth", "share": 0.1}),
        area_feature(multi, {"name": "two"}),
    ]
    text = to_geojson(feature_collection(features, name="run 1"))
    doc = json.loads(text)
    FeatureCollection.model_validate(doc)
    assert len(text.splitlines()) == len(features) + 2  # one feature per line
    assert "NaN" not in text and "Infinity" not in text and "N\u00f6rth" in text and "crs" not in doc
    assert doc["type"] == "FeatureCollection" and doc["name"] == "run 1"
    located, unlocated, line, area, two = doc["features"]
    assert located["geometry"] == {"type": "Point", "coordinates": [2.35, 48.85]}  # lon, lat
    assert located["properties"] == {"source": "a.jpg", "share": 0.5, "pixels": 3, "iou": None, "ratio": None,
                                     "shares": [0.25, None]}
    assert unlocated["geometry"] is None and unlocated["type"] == "Feature"
    assert line["geometry"]["coordinates"] == [[2.35, 48.85], [2.37, 48.86]]
    exterior, hole = area["geometry"]["coordinates"]
    assert LinearRing(exterior).is_ccw and not LinearRing(hole).is_ccw
    assert shapely.geometry.shape(area["geometry"]).equals(north.geometry)
    assert two["geometry"]["type"] == "MultiPolygon"
    assert all(LinearRing(polygon[0]).is_ccw for polygon in two["geometry"]["coordinates"])


def test_geojson_edge_cases():
    assert line_feature([Place(1.0, 2.0)], {})["geometry"] is None  # a LineString needs two positions
    assert json.loads(to_geojson(feature_collection([]))) == {"type": "FeatureCollection", "features": []}
    with pytest.raises(ValueError):
        feature_collection([], type="Feature")
    props = {"n": 1}
    feature = point_feature(Place(1.0, 2.0), props)
    feature["properties"]["n"] = 2
    assert props == {"n": 1}  # the feature holds its own copy


def test_module_constants():
    assert geo.EARTH_RADIUS_M == 6_371_008.8 and issubclass(GeoError, ValueError)
