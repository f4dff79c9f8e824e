"""Street surveys for city planners: photos placed by their EXIF GPS (or a CSV of file, lat, lon), or a
dashcam video placed along a GPX track, labelled by a model -> every indicator per image with its place,
aggregated by districts or grid cells, exported as GeoJSON (engine.geo) and CSV (engine.coverage).

`python -m engine coverage` and the dashboard's Coverage page both run these functions.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plotly.colors import sample_colorscale, unlabel_rgb

from engine import coverage, geo
from engine.coverage import INDICATOR_KEYS, Provenance
from engine.images import gps_tags
from engine.video import frames_at, probe

COLORSCALE = "Viridis"  # the dashboard's map and the exported route: perceptually uniform, dark (low) to yellow (high)


@dataclass
class Survey:
    """What a survey found: the tidy class rows (`coverage.CSV_COLUMNS`) and one place row per image
    or video frame (`coverage.PLACE_COLUMNS`), both stamped with the provenance; `areas` are the
    districts or grid cells (`area_kind` "district" or "cell") that hold at least one image; `routes`:
    for each video, the rows of its frames in route order."""
    provenance: Provenance
    rows: list[dict] = field(default_factory=list)
    places: list[dict] = field(default_factory=list)
    areas: list[geo.Area] = field(default_factory=list)
    area_kind: str | None = None
    routes: list[list[int]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.provenance.model

    @property
    def route(self) -> bool:
        """Whether any rows are video frames along a route."""
        return bool(self.routes)

    def add(self, source: str, labels: np.ndarray, place: geo.Place | None, time_s: float | None = None) -> None:
        """One labelled image (or frame `time_s` seconds into a video) taken at `place` (None: unknown)."""
        lat, lon = (place.lat, place.lon) if place else (None, None)
        counts = coverage.class_pixels(labels)
        self.rows += self.provenance.stamp(coverage.class_rows(source, self.model, counts, lat, lon))
        self.places += self.provenance.stamp([coverage.place_row(
            source, self.model, counts, green_terrain=self.provenance.green_terrain, lat=lat, lon=lon,
            direction=place.direction if place else None, time_s=time_s)])


def image_place(data: bytes, name: str, locations: Mapping[str, geo.Place] | None = None) -> geo.Place | None:
    """Where a photo was taken: its line in the user's locations CSV, else its EXIF GPS, else None."""
    if locations:
        place = geo.place_for(name, locations)
        if place is not None:
            return place
    return geo.place_from_exif(gps_tags(data, name))


def video_samples(path, track: geo.Track, every_m: float, offset_s: float = 0.0) -> list[float]:
    """Seconds into the video at which the route has covered 0, every_m, 2*every_m ... metres. The video
    starts `offset_s` seconds after the track's first point."""
    start = float(track.times[0]) + offset_s
    info = probe(path)
    end = min(float(track.times[-1]), start + info.duration_s) if info.duration_s else float(track.times[-1])
    if end <= start:
        raise geo.GeoError(f"{Path(path).name}: the GPX track ends before the video starts (offset {offset_s:g} s)")
    return [t - start for t in geo.route_samples(track, every_m, start=start, end=end)]


def survey_video(survey: Survey, predict: Callable[[np.ndarray], np.ndarray], path, track: geo.Track, *,
                 every_m: float, offset_s: float = 0.0, source: str | None = None,
                 on_frame: Callable[[int, int], None] | None = None) -> int:
    """Label the frames of a dashcam video every `every_m` metres along its GPX track, each placed at
    the track's interpolated position at that frame's time; `source`: the video's name in the rows
    (default its path), a frame's is `<source>#t=<seconds>` (a W3C media fragment). Returns the number
    of frames labelled."""
    source = source or str(path)
    times = video_samples(path, track, every_m, offset_s)
    start = float(track.times[0]) + offset_s
    first, done = len(survey.places), 0
    for t, frame in frames_at(path, times):
        survey.add(f"{source}#t={t:.2f}", predict(frame), geo.track_position(track, start + t), time_s=round(t, 3))
        done += 1
        if on_frame:
            on_frame(done, len(times))
    survey.routes.append(list(range(first, len(survey.places))))
    return done


def assign_areas(survey: Survey, districts: Sequence[geo.Area] | None = None, grid_m: float | None = None) -> None:
    """Put each located place row in its district (the first that covers it; None outside them all)
    or its grid cell of `grid_m` metres; `survey.areas`: those holding an image, in order of appearance."""
    if districts is not None and grid_m is not None:
        raise ValueError("aggregate by districts or by a grid, not both")
    places = [geo.Place(r["lat"], r["lon"]) if r["located"] else None for r in survey.places]
    for row in survey.places:
        row["area"] = None
    survey.areas, survey.area_kind = [], None
    if districts is not None:
        names = geo.areas_of(places, districts)
        by_name = {a.name: a for a in districts}
        survey.area_kind = "district"
    elif grid_m is not None:
        cells = [geo.grid_cell(p, grid_m) if p else None for p in places]
        names = [c.name if c else None for c in cells]
        by_name = {c.name: c for c in cells if c}
        survey.area_kind = "cell"
    else:
        return
    for row, name in zip(survey.places, names):
        row["area"] = name
    survey.areas = [by_name[n] for n in dict.fromkeys(n for n in names if n is not None)]


def color_of(value: float | None) -> str:
    """The colour of an indicator share (0..1) on `COLORSCALE`, as #rrggbb (grey when None)."""
    if value is None:
        return "#9e9e9e"
    r, g, b = (round(c) for c in unlabel_rgb(sample_colorscale(COLORSCALE, [min(max(value, 0.0), 1.0)])[0]))
    return f"#{r:02x}{g:02x}{b:02x}"


def _located(row: dict) -> geo.Place | None:
    return geo.Place(row["lat"], row["lon"], row["direction"]) if row["located"] else None


def geojson(survey: Survey) -> dict:
    """The survey as one GeoJSON FeatureCollection (RFC 7946, positions [lon, lat]): a Point per image or
    frame (`kind` "image" or "frame"; geometry null when it has no place) whose properties are its
    `coverage.PLACE_COLUMNS`; when aggregated, a Polygon per district or cell (`kind` "district" or
    "cell") with `images` and each indicator's mean; for a video, a LineString per stretch of the route
    between two frames (`kind` "route", its `green_view_index` that of the frame it starts at, and a
    simplestyle `stroke` colour on the same scale). The foreign member `provenance` says which model and
    evaluation stand behind the numbers, with the model's IoU for each class used."""
    features = [geo.point_feature(_located(r), {"kind": "image" if r["time_s"] is None else "frame", **r})
                for r in survey.places]
    if survey.areas:
        means = coverage.by_area(survey.places)
        features += [geo.area_feature(a, {"kind": survey.area_kind, "name": a.name, **means[a.name]})
                     for a in survey.areas]
    for rows in survey.routes:
        stops = [survey.places[k] for k in rows if survey.places[k]["located"]]
        for a, b in zip(stops, stops[1:]):
            gvi = a["green_view_index"]
            features.append(geo.line_feature([_located(a), _located(b)], {
                "kind": "route", "from": a["source"], "to": b["source"], "green_view_index": gvi,
                "stroke": color_of(gvi), "stroke-width": 4}))
    return geo.feature_collection(features, provenance=survey.provenance.as_dict())


def area_rows(survey: Survey) -> list[dict]:
    """One row per district or cell: name, images, each indicator's mean (`coverage.mean_indicators`)."""
    means = coverage.by_area(survey.places)
    return [{"area": a.name, **means[a.name]} for a in survey.areas]


def map_areas(survey: Survey) -> list[dict]:
    """`area_rows` with each area's GeoJSON geometry (lon/lat) and its name as `name`, for a map."""
    return [{"name": r["area"], "geometry": geo.area_feature(a, {})["geometry"], **r}
            for a, r in zip(survey.areas, area_rows(survey))]


AREA_COLUMNS = ("area", "images", *INDICATOR_KEYS)
