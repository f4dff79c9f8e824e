"""Planners' indicators with places: EXIF GPS photos, a places CSV, a dashcam video on a GPX track,
districts and grid cells, the GeoJSON and CSV exports and what stands behind their numbers. The model
is a real tiny checkpoint trained by the engine; photos, tracks and districts are files the tests write."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import numpy as np
import pytest
from geojson_pydantic import FeatureCollection
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from engine import coverage, geo, survey
from engine.bench import synthetic_clip
from engine.classes import CLASS_NAMES, NUM_CLASSES
from engine.cli import main
from engine.data.synthetic import render_scene
from engine.inference import InferenceOptions, Segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

# Two photos with EXIF GPS written as degrees, minutes and seconds (to 1/1000 s), one south-west.
PHOTOS = {
    "north_east.jpg": (("N", (48, 46, Fraction(42123, 1000))), ("E", (9, 10, Fraction(48456, 1000))), 135.5),
    "south_west.jpg": (("S", (33, 52, Fraction(7777, 1000))), ("W", (70, 39, Fraction(11, 1000))), None),
}


def dms_degrees(ref: str, dms) -> float:
    d, m, s = (float(x) for x in dms)
    return (d + m / 60 + s / 3600) * (-1 if ref in "SW" else 1)


def write_photo(path, seed: int, gps: tuple | None, size=(96, 48)) -> None:
    """A street scene as a JPEG, with an EXIF GPS block written by Pillow when `gps` is given."""
    exif = Image.Exif()
    if gps is not None:
        (lat_ref, lat), (lon_ref, lon), direction = gps
        block = {1: lat_ref, 2: tuple(IFDRational(x.numerator, x.denominator) if isinstance(x, Fraction)
                                      else IFDRational(x, 1) for x in lat),
                 3: lon_ref, 4: tuple(IFDRational(x.numerator, x.denominator) if isinstance(x, Fraction)
                                      else IFDRational(x, 1) for x in lon)}
        if direction is not None:
            block |= {16: "T", 17: IFDRational(int(direction * 10), 10)}
        exif[ExifTags.IFD.GPSInfo] = block
    exif[ExifTags.Base.Make] = "TestCam"
    Image.fromarray(render_scene(np.random.default_rng(seed), *size)[0]).save(path, "JPEG", quality=90, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for k, (name, gps) in enumerate(PHOTOS.items()):
        write_photo(d / name, k, gps)
    write_photo(d / "no_gps.jpg", 7, None)
    return d


def ckpt_args(trained):
    return ["--variant", trained.variant, "--weights-dir", str(trained.weights), "--device", "cpu", "--db", trained.db]


def labels_with(shares: dict[str, float], pixels: int = 400) -> np.ndarray:
    """A 1 x `pixels` label map holding these classes in these shares (the rest road)."""
    out = np.zeros((1, pixels), np.uint8)
    at = 0
    for name, share in shares.items():
        n = round(share * pixels)
        out[0, at:at + n] = CLASS_NAMES.index(name)
        at += n
    return out


def no_evaluation(model="m", terrain=False):
    return coverage.provenance(model, [], terrain)


# ---- indicators -------------------------------------------------------------------------------------

def test_indicators_follow_their_definitions():
    labels = labels_with({"vegetation": 0.2, "terrain": 0.1, "sky": 0.15, "car": 0.05, "bus": 0.05, "bicycle": 0.02,
                          "person": 0.03, "rider": 0.01, "sidewalk": 0.1, "building": 0.09})
    counts = coverage.class_pixels(labels)
    got = coverage.indicators(counts)
    assert got == pytest.approx({"green_view_index": 0.2, "sky_view": 0.15, "road": 0.2, "sidewalk": 0.1,
                                 "building": 0.09, "vehicles": 0.12, "people": 0.04})
    assert coverage.indicators(counts, green_terrain=True)["green_view_index"] == pytest.approx(0.3)
    assert coverage.indicators(np.zeros(NUM_CLASSES, np.int64)) == {k: None for k in coverage.INDICATOR_KEYS}
    row = coverage.place_row("a.jpg", "m", counts)
    assert set(coverage.PLACE_COLUMNS) - set(row) == set(coverage.PROVENANCE_COLUMNS)
    assert row["share_traffic_light"] == 0.0 and sum(row[coverage.share_key(c)] for c in CLASS_NAMES) == pytest.approx(1)
    assert all(c in CLASS_NAMES for ind in coverage.INDICATORS for c in ind.classes)


def test_provenance_prefers_real_streets_and_says_when_numbers_are_not_validated():
    day = datetime(2026, 11, 2, tzinfo=timezone.utc)

    def ev(id_, dataset, condition="", veg=0.5):
        return {"id": id_, "dataset": dataset, "condition": condition, "split": "val", "created_at": day,
                "miou": 0.6, "num_images": 500, "per_class_iou": {c: 0.7 for c in CLASS_NAMES} | {"vegetation": veg}}

    assert no_evaluation().evaluation is None and not no_evaluation().validated
    assert "no evaluation" in no_evaluation().warning
    synthetic = coverage.provenance("m", [ev(3, "synthetic")])
    assert not synthetic.validated and "synthetic street scenes" in synthetic.warning
    best = coverage.provenance("m", [ev(1, "cityscapes", veg=0.91), ev(2, "acdc", "fog"), ev(4, "synthetic")])
    assert best.validated and best.warning is None and best.evaluation["id"] == 1
    assert best.evaluation_label == "cityscapes val, 2026-11-02 (evaluation 1)"
    stamped = best.stamp(coverage.coverage_rows("a.jpg", "m", labels_with({"vegetation": 0.5})))
    assert {r["class_name"]: r["class_iou"] for r in stamped}["vegetation"] == 0.91
    assert all(r["validated"] is True and r["evaluation"] == best.evaluation_label for r in stamped)
    terrain = coverage.provenance("m", [ev(1, "cityscapes")], green_terrain=True).as_dict()
    assert set(terrain["indicators"]["green_view_index"]["class_iou"]) == {"vegetation", "terrain"}


# ---- districts and grid cells -----------------------------------------------------------------------

def square(west, south, size):
    return [[west, south], [west + size, south], [west + size, south + size], [west, south + size], [west, south]]


def test_district_aggregation_gives_the_hand_computed_means(tmp_path):
    districts = tmp_path / "districts.geojson"
    districts.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Mitte", "code": 1},
         "geometry": {"type": "Polygon", "coordinates": [square(9.0, 48.0, 0.01)]}},
        {"type": "Feature", "properties": {"name": "Ost", "code": 2},
         "geometry": {"type": "Polygon", "coordinates": [square(9.01, 48.0, 0.01)]}}]}))
    found = survey.Survey(no_evaluation())
    images = [("a", {"vegetation": 0.5, "sky": 0.1}, geo.Place(48.005, 9.005)),    # Mitte
              ("b", {"vegetation": 0.25, "sky": 0.3}, geo.Place(48.002, 9.008)),   # Mitte
              ("c", {"vegetation": 1.0}, geo.Place(48.005, 9.015)),                # Ost
              ("d", {"vegetation": 0.8}, geo.Place(47.5, 9.0)),                    # outside both
              ("e", {"vegetation": 0.9}, None)]                                    # no place
    for name, shares, place in images:
        found.add(name, labels_with(shares), place)
    survey.assign_areas(found, geo.read_districts(districts))
    by_area = {r["area"]: r for r in survey.area_rows(found)}
    assert set(by_area) == {"Mitte", "Ost"}
    assert by_area["Mitte"]["images"] == 2 and by_area["Mitte"]["green_view_index"] == pytest.approx((0.5 + 0.25) / 2)
    assert by_area["Mitte"]["sky_view"] == pytest.approx(0.2) and by_area["Mitte"]["road"] == pytest.approx(0.425)
    assert by_area["Ost"]["images"] == 1 and by_area["Ost"]["green_view_index"] == pytest.approx(1.0)
    assert [r["area"] for r in found.places] == ["Mitte", "Mitte", "Ost", None, None]

    fc = survey.geojson(found)
    FeatureCollection.model_validate(json.loads(geo.to_geojson(fc)))
    areas = {f["properties"]["name"]: f for f in fc["features"] if f["properties"]["kind"] == "district"}
    assert areas["Mitte"]["properties"]["images"] == 2
    assert areas["Mitte"]["properties"]["green_view_index"] == pytest.approx(0.375)

    # a 100 m grid: rows of 100 m of latitude from the equator, columns of 100 m of longitude at the row's middle
    dlat = 100 / (geo.EARTH_RADIUS_M * np.pi / 180)
    row = int(48.005 // dlat)
    dlon = dlat / np.cos(np.radians((row + 0.5) * dlat))
    col = int(9.005 // dlon)
    lat, lon = (row + 0.5) * dlat, (col + 0.5) * dlon  # the middle of cell (row, col)
    gridded = survey.Survey(no_evaluation())
    for shares, place in (({"vegetation": 0.5}, geo.Place(lat + 0.3 * dlat, lon - 0.3 * dlon)),
                          ({"vegetation": 0.2}, geo.Place(lat - 0.3 * dlat, lon + 0.3 * dlon)),
                          ({"vegetation": 0.9}, geo.Place(lat, lon + dlon))):   # the next cell east
        gridded.add("x", labels_with(shares), place)
    survey.assign_areas(gridded, grid_m=100)
    cells = survey.area_rows(gridded)
    assert [(r["area"], r["images"]) for r in cells] == [(f"cell {row},{col}", 2), (f"cell {row},{col + 1}", 1)]
    assert cells[0]["green_view_index"] == pytest.approx(0.35) and gridded.area_kind == "cell"
    survey.assign_areas(found)  # no aggregation: no areas left from before
    assert found.areas == [] and all(r["area"] is None for r in found.places)


# ---- the command line on a real model ---------------------------------------------------------------

def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_exif_photos_come_out_at_their_coordinates_and_a_photo_without_gps_is_kept(dashboard_data, photos, tmp_path,
                                                                                 capsys):
    out = tmp_path / "c.geojson"
    variant = dashboard_data.variants[0]
    args = ["--variant", variant, "--weights-dir", str(dashboard_data.weights), "--device", "cpu", "--db", dashboard_data.db]
    rc = main(["coverage", *args, "--input", str(photos), "--csv", str(tmp_path / "c.csv"),
               "--indicators", str(tmp_path / "i.csv"), "--geojson", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "3 image(s), 2 with a place" in printed.out
    assert "evaluated only on the synthetic street scenes" in printed.err  # the fixture's evaluations: synthetic

    text = out.read_text()
    FeatureCollection.model_validate(json.loads(text))  # RFC 7946's structure
    fc = json.loads(text)
    by_file = {f["properties"]["source"].rsplit("/", 1)[-1]: f for f in fc["features"]}
    assert set(by_file) == {"north_east.jpg", "south_west.jpg", "no_gps.jpg"}
    for name, ((lat_ref, lat), (lon_ref, lon), direction) in PHOTOS.items():
        feature = by_file[name]
        assert feature["geometry"]["type"] == "Point"
        lon_out, lat_out = feature["geometry"]["coordinates"]  # RFC 7946: longitude first
        assert lat_out == pytest.approx(dms_degrees(lat_ref, lat), abs=1e-9)   # 1/1000 s of arc: ~3 cm
        assert lon_out == pytest.approx(dms_degrees(lon_ref, lon), abs=1e-9)
        assert feature["properties"]["direction"] == direction
        assert feature["properties"]["located"] is True and feature["properties"]["kind"] == "image"
    unplaced = by_file["no_gps.jpg"]
    assert unplaced["geometry"] is None and unplaced["properties"]["located"] is False
    props = by_file["north_east.jpg"]["properties"]
    assert {"source", "green_view_index", "sky_view", *(coverage.share_key(c) for c in CLASS_NAMES)} <= set(props)
    assert sum(props[coverage.share_key(c)] for c in CLASS_NAMES) == pytest.approx(1.0)
    assert props["validated"] is False and props["evaluation"].startswith("synthetic val")  # not synthetic-acdc (fog)

    prov = fc["provenance"]
    assert prov["model"] == variant and prov["validated"] is False and prov["evaluation"]["dataset"] == "synthetic"
    assert set(prov["class_iou"]) == set(CLASS_NAMES)
    assert prov["indicators"]["vehicles"]["class_iou"].keys() == {"car", "truck", "bus", "train", "motorcycle", "bicycle"}

    tidy = read_csv(tmp_path / "c.csv")
    assert tuple(tidy[0]) == coverage.CSV_COLUMNS and len(tidy) == 3 * NUM_CLASSES
    ne = [r for r in tidy if r["source"].endswith("north_east.jpg")]
    assert float(ne[0]["lat"]) == pytest.approx(dms_degrees("N", PHOTOS["north_east.jpg"][0][1]), abs=1e-9)
    assert all(r["lat"] == r["lon"] == "" for r in tidy if r["source"].endswith("no_gps.jpg"))
    assert {r["class_name"]: r["class_iou"] for r in ne}.keys() == set(CLASS_NAMES)
    indicators = read_csv(tmp_path / "i.csv")
    assert tuple(indicators[0]) == coverage.PLACE_COLUMNS and [r["located"] for r in indicators].count("False") == 1


def test_a_places_csv_overrides_exif_and_districts_count_the_images(trained, photos, tmp_path, capsys):
    (tmp_path / "places.csv").write_text("File,Lat,Lon,note\nno_gps.jpg,48.001,9.001,the van\n"
                                         f"{photos / 'north_east.jpg'},48.002,9.002,\n")
    (tmp_path / "d.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"bezirk": "Mitte"},
         "geometry": {"type": "Polygon", "coordinates": [square(9.0, 48.0, 0.01)]}}]}))
    out = tmp_path / "c.geojson"
    rc = main(["coverage", *ckpt_args(trained), "--input", str(photos), "--csv", str(tmp_path / "c.csv"), "--quiet",
               "--geojson", str(out), "--locations", str(tmp_path / "places.csv"), "--districts",
               str(tmp_path / "d.geojson"), "--district-field", "bezirk"])
    assert rc == 0 and "Mitte: 2 image(s)" in capsys.readouterr().out
    fc = json.loads(out.read_text())
    points = {f["properties"]["source"].rsplit("/", 1)[-1]: f for f in fc["features"] if f["properties"]["kind"] == "image"}
    assert points["no_gps.jpg"]["geometry"]["coordinates"] == [9.001, 48.001]
    assert points["north_east.jpg"]["geometry"]["coordinates"] == [9.002, 48.002]  # the CSV before the EXIF
    assert points["south_west.jpg"]["properties"]["area"] is None                   # its EXIF place: Chile
    district = next(f for f in fc["features"] if f["properties"]["kind"] == "district")
    gvi = [points[n]["properties"]["green_view_index"] for n in ("no_gps.jpg", "north_east.jpg")]
    assert district["properties"]["images"] == 2 and district["properties"]["green_view_index"] == pytest.approx(np.mean(gvi))

    assert main(["coverage", *ckpt_args(trained), "--input", str(photos), "--csv", str(tmp_path / "x.csv"),
                 "--districts", str(tmp_path / "d.geojson"), "--grid-m", "50"]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("file,lat,lon\na.jpg,north,9\n")
    assert main(["coverage", *ckpt_args(trained), "--input", str(photos), "--csv", str(tmp_path / "x.csv"),
                 "--locations", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv, line 2: lat 'north' is not a number" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A 2-second clip at 10 fps and the GPX track of its drive: 20 m north in 2 s, then (after the
    clip) on to the east; the track starts 1 s before the clip."""
    d = tmp_path_factory.mktemp("drive")
    synthetic_clip(d / "drive.mp4", (96, 48), frames=20, fps=10.0)
    t0 = datetime(2026, 5, 4, 8, 0, tzinfo=timezone.utc)
    north = 10.0 / (geo.EARTH_RADIUS_M * np.pi / 180)  # degrees of latitude per 10 m
    points = [(t0, geo.Place(48.0, 9.0)), (t0 + timedelta(seconds=1), geo.Place(48.0 + north, 9.0)),
              (t0 + timedelta(seconds=3), geo.Place(48.0 + 3 * north, 9.0)),
              (t0 + timedelta(seconds=9), geo.Place(48.0 + 3 * north, 9.001))]
    (d / "drive.gpx").write_text(geo.gpx_text(points))
    return d, t0, north


def test_a_gpx_track_places_video_frames_at_the_interpolated_positions(trained, drive):
    d, t0, north = drive
    track = geo.read_gpx(d / "drive.gpx")
    seg = Segmenter(trained.weights / trained.variant / "best.pt", "cpu", options=InferenceOptions(precision="fp32"))
    found = survey.Survey(no_evaluation(trained.variant))
    n = survey.survey_video(found, seg.predict, d / "drive.mp4", track, every_m=5.0, offset_s=1.0, source="drive.mp4")
    # the clip covers track seconds 1..2.9 at 10 m/s: a frame every 5 m is one every 0.5 s
    assert n == 4 and [r["time_s"] for r in found.places] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    for row in found.places:
        assert row["lat"] == pytest.approx(48.0 + north * (1 + row["time_s"]), abs=1e-10)
        assert row["lon"] == pytest.approx(9.0) and row["direction"] == pytest.approx(0.0, abs=1e-6)
        assert row["source"] == f"drive.mp4#t={row['time_s']:.2f}"
    fc = survey.geojson(found)
    FeatureCollection.model_validate(json.loads(geo.to_geojson(fc)))
    route = [f for f in fc["features"] if f["properties"]["kind"] == "route"]
    assert len(route) == 3 and all(f["geometry"]["type"] == "LineString" for f in route)
    first = route[0]
    assert first["geometry"]["coordinates"][0] == pytest.approx([9.0, 48.0 + north])
    assert first["properties"]["green_view_index"] == found.places[0]["green_view_index"]
    assert first["properties"]["stroke"] == survey.color_of(found.places[0]["green_view_index"])


def test_coverage_cli_takes_a_dashcam_video_with_its_gpx_track(trained, drive, photos, tmp_path, capsys):
    d, _, _ = drive
    out = tmp_path / "route.geojson"
    rc = main(["coverage", *ckpt_args(trained), "--input", str(photos / "north_east.jpg"), str(d / "drive.mp4"),
               "--gpx", str(d / "drive.gpx"), "--every-m", "10", "--csv", str(tmp_path / "c.csv"), "--geojson", str(out),
               "--quiet"])
    assert rc == 0 and "2 frames, one every 10 m" in capsys.readouterr().out  # 20 m of track in the clip
    fc = json.loads(out.read_text())
    kinds = [f["properties"]["kind"] for f in fc["features"]]
    assert kinds == ["image", "frame", "frame", "route"]  # the route joins the video's frames, not the photo
    route = fc["features"][-1]
    assert route["properties"]["from"].endswith("drive.mp4#t=0.00") and route["properties"]["to"].endswith("#t=1.00")
    assert main(["coverage", *ckpt_args(trained), "--input", str(d / "drive.mp4"), "--csv", str(tmp_path / "v.csv")]) == 1
    assert "needs its GPX track (--gpx)" in capsys.readouterr().err and not (tmp_path / "v.csv").exists()


def test_a_model_with_no_evaluation_is_marked_not_validated(trained, photos, tmp_path, capsys):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    from engine.store import Store

    Store(empty).close()
    args = ["--variant", trained.variant, "--weights-dir", str(trained.weights), "--device", "cpu", "--db", empty]
    assert main(["coverage", *args, "--input", str(photos / "north_east.jpg"), "--csv", str(tmp_path / "c.csv"),
                 "--geojson", str(tmp_path / "c.geojson"), "--quiet"]) == 0
    assert "has no evaluation in the results store" in capsys.readouterr().err
    fc = json.loads((tmp_path / "c.geojson").read_text())
    assert fc["provenance"]["evaluation"] is None and fc["provenance"]["validated"] is False
    assert {r["evaluation"] for r in read_csv(tmp_path / "c.csv")} == {"none"}


def test_exif_written_by_the_product_reads_back(tmp_path):
    """The sample photos' EXIF (geo.exif_gps) is read back to 1/10000 s of arc."""
    place = geo.Place(-22.9519, -43.2105, 271.25)
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = geo.exif_gps(place)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=exif)
    back = survey.image_place(buf.getvalue(), "x.jpg")
    assert back.lat == pytest.approx(place.lat, abs=1e-7) and back.lon == pytest.approx(place.lon, abs=1e-7)
    assert back.direction == pytest.approx(271.25)
