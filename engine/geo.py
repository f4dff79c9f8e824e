"""Where street photos were taken, and the map features that show them: the "place" half of putting
results on a map.

A photo's place comes from its EXIF GPS block (`place_from_exif`, fed by `engine.images.gps_tags`) or
from a CSV of file, lat, lon[, direction] (`read_locations`, `place_for`); a dashcam video's frames are
placed on a GPX track by time (`read_gpx`, `track_position`, `route_samples`). Places are grouped into
the cells of a fixed grid of about N x N metres (`grid_cell`) or into the districts of a GeoJSON file
(`read_districts`, `area_of`). Results go out as GeoJSON (RFC 7946: `point_feature` ... `to_geojson`).

Coordinates are WGS 84 degrees. `Place` names them lat, lon; every geometry and every GeoJSON position
is in the order lon, lat (x, y), as RFC 7946 and shapely have it. Distances are great-circle (haversine)
on a sphere of radius `EARTH_RADIUS_M`. Errors a user's file can cause are `GeoError`s whose one-line
message names the file (and the line, for a CSV).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx
import numpy as np
import shapely
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from engine.errors import UserError

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), for every distance and the grid
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180  # metres per degree of latitude (and of longitude at the equator)
_POLYGONS = ("Polygon", "MultiPolygon")


class GeoError(UserError, ValueError):
    """A locations CSV, GPX track or districts file that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Place:
    lat: float
    lon: float
    direction: float | None = None  # degrees clockwise from north (EXIF GPSImgDirection, or the track's bearing)


# ---- EXIF GPS -----------------------------------------------------------------------------------------

def _rational(value: Any) -> float | None:
    """One EXIF rational (Pillow's IFDRational, a (numerator, denominator) pair or a plain number) as a
    finite float; None for a zero denominator or anything that is not a number."""
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
    else:
        num, den = getattr(value, "numerator", value), getattr(value, "denominator", 1)
    if not all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in (num, den)) or not den:
        return None
    x = float(num) / float(den)
    return x if math.isfinite(x) else None


def _ref(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip("\x00 ").upper() if isinstance(value, str) else ""


def _degrees(parts: Any, ref: Any, signs: str, limit: float) -> float | None:
    """Degrees from EXIF (degrees, minutes, seconds) and a ref of `signs` (positive, negative: "NS" or "EW")."""
    parts = parts if isinstance(parts, (tuple, list)) else (parts,)
    values = [_rational(p) for p in parts]
    ref = _ref(ref)
    if not 1 <= len(values) <= 3 or None in values or min(values) < 0 or len(ref) != 1 or ref not in signs:
        return None  # a missing hemisphere is malformed: guessing it could put the photo on another continent
    deg = sum(v / 60**i for i, v in enumerate(values)) * (1 if ref == signs[0] else -1)
    return deg if abs(deg) <= limit else None


def _direction(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value) % 360.0


def place_from_exif(gps: Mapping[int, Any]) -> Place | None:
    """The place in a Pillow EXIF GPS block (tags 1-4: latitude ref and degrees/minutes/seconds, longitude
    ref and d/m/s; 17: the direction the camera faced, true or magnetic north as written): south and west
    negative. None when latitude or longitude is missing, malformed or out of range; direction None when
    absent or malformed."""
    lat = _degrees(gps.get(2), gps.get(1), "NS", 90.0)
    lon = _degrees(gps.get(4), gps.get(3), "EW", 180.0)
    if lat is None or lon is None:
        return None
    return Place(lat, lon, _direction(_rational(gps.get(17))))


def exif_gps(place: Place) -> dict[int, Any]:
    """The EXIF GPS block of a place, as Pillow writes it (`img.save(..., exif=...)` with
    `exif[ExifTags.IFD.GPSInfo] = exif_gps(place)`): degrees, minutes and seconds to 1/10000 s (3 mm)."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(value: float) -> tuple:
        seconds = round(abs(value) * 3600 * 10000)
        d, rest = divmod(seconds, 3600 * 10000)
        m, s = divmod(rest, 60 * 10000)
        return IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 10000)

    gps = {0: b"\x02\x03\x00\x00", 1: "N" if place.lat >= 0 else "S", 2: dms(place.lat),
           3: "E" if place.lon >= 0 else "W", 4: dms(place.lon)}
    if place.direction is not None:
        gps |= {16: "T", 17: IFDRational(round(place.direction * 100), 100)}
    return gps


# ---- locations CSV ------------------------------------------------------------------------------------

def _read_text(path: str | os.PathLike, hint: str) -> str:
    """A user's text file (UTF-8, with or without BOM), or GeoError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise GeoError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise GeoError(f"{path}: not UTF-8 text; {hint}") from None


def _cell_number(text: str, column: str, where: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise GeoError(f"{where}: {column} {text!r} is not a number")
    return x


def read_locations(path: str | os.PathLike) -> dict[str, Place]:
    """Places from a CSV whose header holds `file`, `lat`, `lon` and optionally `direction` (any case; other
    columns are ignored): file as listed -> Place. A row with both lat and lon empty lists a file with no
    place (it is left out). GeoError, naming the file and line, for a missing column, a non-number, an
    out-of-range coordinate, or a file listed twice with different places."""
    return parse_locations(_read_text(path, "save the CSV as UTF-8"), str(path))


def parse_locations(text: str, name: str) -> dict[str, Place]:
    """`read_locations` of a CSV's text (an upload); `name` is used in messages."""
    return _locations(csv.reader(io.StringIO(text, newline="")), name)


def _locations(reader, name: str) -> dict[str, Place]:
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in ("file", "lat", "lon") if c not in header]
        if missing:
            raise GeoError(f"{name}, line 1: no {', '.join(missing)} column; the header needs file, lat, lon "
                           "(and optionally direction)")
        col = {c: header.index(c) for c in ("file", "lat", "lon", "direction") if c in header}
        places: dict[str, Place | None] = {}
        lines: dict[str, int] = {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{name}, line {reader.line_num}"
            cell = {c: (row[i].strip() if i < len(row) else "") for c, i in col.items()}
            place = _row_place(cell, where)
            file = cell["file"]
            if not file:
                raise GeoError(f"{where}: no file name")
            if file in places and places[file] != place:
                raise GeoError(f"{where}: {file} is listed again with a different place (first on line {lines[file]})")
            places.setdefault(file, place)
            lines.setdefault(file, reader.line_num)
    except csv.Error as e:
        raise GeoError(f"{name}, line {reader.line_num}: not a readable CSV ({e})") from None
    return {file: place for file, place in places.items() if place is not None}


def _row_place(cell: dict[str, str], where: str) -> Place | None:
    if not cell["lat"] and not cell["lon"]:
        return None
    if not cell["lat"] or not cell["lon"]:
        raise GeoError(f"{where}: {'lat' if not cell['lat'] else 'lon'} is empty; give both lat and lon, or neither")
    lat, lon = (_cell_number(cell[c], c, where) for c in ("lat", "lon"))
    if abs(lat) > 90 or abs(lon) > 180:
        raise GeoError(f"{where}: lat {cell['lat']}, lon {cell['lon']} is out of range (lat -90..90, lon -180..180)")
    direction = cell.get("direction", "")
    return Place(lat, lon, _direction(_cell_number(direction, "direction", where)) if direction else None)


def _basename(source: str) -> str:
    return re.split(r"[\\/]", source)[-1]  # CSVs written on Windows list C:\photos\x.jpg


def places_for(sources: Sequence[str], locations: Mapping[str, Place]) -> list[Place | None]:
    """`place_for` for many images at once (one pass over `locations`)."""
    by_name: dict[str, list[Place]] = {}
    for file, place in locations.items():
        by_name.setdefault(_basename(file), []).append(place)
    out = []
    for source in map(os.fspath, sources):
        same = by_name.get(_basename(source), [])
        out.append(locations[source] if source in locations else same[0] if len(same) == 1 else None)
    return out


def place_for(source: str, locations: Mapping[str, Place]) -> Place | None:
    """The place of an image: its path exactly as listed, else the one listed entry with the same file
    name; None when no entry, or several, have that name."""
    return places_for([source], locations)[0]


# ---- GPX tracks ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Track:
    times: np.ndarray  # float64 seconds since the epoch (UTC), strictly increasing
    lats: np.ndarray
    lons: np.ndarray

    def __post_init__(self):
        arrays = [np.array(a, dtype=np.float64) for a in (self.times, self.lats, self.lons)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or len(arrays[0]) < 2:
            raise ValueError("a track needs times, lats and lons of one length, at least 2")
        if not (np.diff(arrays[0]) > 0).all():
            raise ValueError("a track's times must be strictly increasing")
        for name, a in zip(("times", "lats", "lons"), arrays):
            a.flags.writeable = False
            object.__setattr__(self, name, a)

    @property
    def duration_s(self) -> float:
        """Seconds from the first point to the last."""
        return float(self.times[-1] - self.times[0])


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def read_gpx(path: str | os.PathLike) -> Track:
    """The timed points of a GPX file (every track and segment; the routes when there are no track
    points), in time order, the first of points sharing a timestamp kept. Times without a zone are UTC.
    GeoError when the file is not GPX or has fewer than 2 timed points."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GeoError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_gpx(data, str(path))


def parse_gpx(data: bytes | str, path: str) -> Track:
    """`read_gpx` of a GPX file's content (an upload); `path` is used in messages."""
    try:
        gpx = gpxpy.parse(data)
    except Exception as e:  # noqa: BLE001 (gpxpy's errors, and decoding errors, on a file that is not GPX)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GeoError(f"{path}: not a GPX file ({reason})") from None
    points = [p for t in gpx.tracks for s in t.segments for p in s.points]
    points = points or [p for r in gpx.routes for p in r.points]
    timed = [(_utc(p.time).timestamp(), p.latitude, p.longitude) for p in points if p.time is not None]
    distinct = len({t for t, _, _ in timed})
    if distinct < 2:
        raise GeoError(f"{path}: {distinct} distinct point time(s); a GPX track needs at least 2 timed points "
                       "to place frames on")
    data = np.array(timed, dtype=np.float64)
    data = data[np.argsort(data[:, 0], kind="stable")]  # stable: file order among equal times
    data = data[np.r_[True, np.diff(data[:, 0]) > 0]]
    if (np.abs(data[:, 1]) > 90).any() or (np.abs(data[:, 2]) > 180).any() or not np.isfinite(data).all():
        raise GeoError(f"{path}: a point's lat/lon is out of range (lat -90..90, lon -180..180)")
    return Track(data[:, 0], data[:, 1], data[:, 2])


def gpx_text(points: Sequence[tuple[datetime, Place]]) -> str:
    """A GPX 1.1 file of one track through these (time, place) points (gpxpy writes it)."""
    gpx = gpxpy.gpx.GPX()
    track, segment = gpxpy.gpx.GPXTrack(), gpxpy.gpx.GPXTrackSegment()
    gpx.tracks.append(track)
    track.segments.append(segment)
    segment.points += [gpxpy.gpx.GPXTrackPoint(p.lat, p.lon, time=t) for t, p in points]
    return gpx.to_xml(version="1.1")


def _haversine(lat1, lon1, lat2, lon2):
    """Great-circle metres between points given in degrees (numbers or arrays)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def distance_m(a: Place, b: Place) -> float:
    """Great-circle (haversine) metres from a to b."""
    return float(_haversine(a.lat, a.lon, b.lat, b.lon))


def bearing_deg(a: Place, b: Place) -> float | None:
    """The initial bearing from a to b, degrees clockwise from north in [0, 360); None when they are one point."""
    if a.lat == b.lat and (a.lon - b.lon) % 360 == 0:
        return None
    p1, p2, dl = math.radians(a.lat), math.radians(b.lat), math.radians(b.lon - a.lon)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    deg = math.degrees(math.atan2(y, x)) % 360.0
    return 0.0 if deg == 360.0 else deg


def _wrap(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0 if abs(lon) > 180 else lon


def track_position(track: Track, t: float) -> Place | None:
    """The place at time t (seconds since the epoch): linear in lat/lon between the two points around t,
    facing the bearing of their segment (None on a segment that does not move); None outside the track's
    time span."""
    times = track.times
    if not times[0] <= t <= times[-1]:  # also NaN
        return None
    i = min(int(np.searchsorted(times, t, side="right")) - 1, len(times) - 2)
    a = Place(float(track.lats[i]), float(track.lons[i]))
    b = Place(float(track.lats[i + 1]), float(track.lons[i + 1]))
    lon_b = b.lon + 360.0 * round((a.lon - b.lon) / 360.0)  # across +-180 the short way
    f = float((t - times[i]) / (times[i + 1] - times[i]))
    return Place((1 - f) * a.lat + f * b.lat, _wrap((1 - f) * a.lon + f * lon_b), bearing_deg(a, b))


def route_samples(track: Track, every_m: float, *, start: float | None = None,
                  end: float | None = None) -> list[float]:
    """The times (seconds since the epoch) at which the track has covered 0, every_m, 2 * every_m, ...
    metres since `start` (default the track's first time), up to `end` (default its last); both are
    clipped to the track. The time inside a segment is interpolated linearly with distance. A track that
    does not move gives the start alone; an empty window gives []."""
    if not every_m > 0 or not math.isfinite(every_m):
        raise ValueError(f"every_m must be a positive number of metres, not {every_m}")
    if (start is not None and math.isnan(start)) or (end is not None and math.isnan(end)):
        raise ValueError("start and end must be times, not NaN")
    t0 = track.times[0] if start is None else max(float(start), track.times[0])
    t1 = track.times[-1] if end is None else min(float(end), track.times[-1])
    if t1 < t0:
        return []
    ts = np.concatenate([[t0], track.times[(track.times > t0) & (track.times < t1)], [t1]])
    unwrapped = np.unwrap(track.lons, period=360.0)  # across +-180 the short way
    lats, lons = np.interp(ts, track.times, track.lats), np.interp(ts, track.times, unwrapped)
    covered = np.concatenate([[0.0], np.cumsum(_haversine(lats[:-1], lons[:-1], lats[1:], lons[1:]))])
    targets = np.arange(int(covered[-1] / every_m + 1e-9) + 1) * every_m  # 1e-9: a track of exactly N steps
    j = np.clip(np.searchsorted(covered, targets, side="left"), 1, len(covered) - 1)  # segment j-1 -> j
    step = covered[j] - covered[j - 1]
    f = np.clip((targets - covered[j - 1]) / np.where(step > 0, step, 1.0), 0.0, 1.0)
    return (ts[j - 1] + f * (ts[j] - ts[j - 1])).tolist()


# ---- grid cells and districts -------------------------------------------------------------------------

@dataclass(frozen=True)
class Area:
    name: str
    geometry: BaseGeometry  # Polygon or MultiPolygon, lon/lat


def grid_cell(place: Place, cell_m: float) -> Area:
    """The cell holding `place` in a fixed grid of about cell_m x cell_m metres: rows of cell_m of latitude
    counted from the equator; in each row, columns of cell_m of longitude at the row's middle latitude,
    counted from longitude 0 (so the column that reaches +-180 is cut there, and a row at a pole is one
    column each side of longitude 0). Named "cell ROW,COL"; the same place and cell_m always give the same cell."""
    if not cell_m > 0 or not math.isfinite(cell_m):
        raise ValueError(f"cell_m must be a positive number of metres, not {cell_m}")
    dlat = cell_m / _M_PER_DEG
    row = math.floor(place.lat / dlat)
    row -= row * dlat >= 90  # lat 90: the row below, not an empty one above
    middle = min(abs((row + 0.5) * dlat), 90.0)
    dlon = min(cell_m / (_M_PER_DEG * max(math.cos(math.radians(middle)), 1e-12)), 360.0)
    col = math.floor(place.lon / dlon)
    col -= col * dlon >= 180  # lon 180: the column that ends there
    geometry = box(max(col * dlon, -180.0), max(row * dlat, -90.0),
                   min((col + 1) * dlon, 180.0), min((row + 1) * dlat, 90.0))
    return Area(f"cell {row},{col}", geometry)


def _district_name(props: Mapping[str, Any], name_field: str | None, k: int, where: str) -> str:
    if name_field is not None:
        if props.get(name_field) is None:
            raise GeoError(f"{where}: feature {k} has no {name_field!r} property")
        return str(props[name_field])
    if props.get("name") not in (None, ""):
        return str(props["name"])
    return next((v for v in props.values() if isinstance(v, str) and v.strip()), f"district {k}")


def _features(doc: Any) -> list:
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection" and isinstance(doc.get("features"), list):
        return doc["features"]
    if kind == "Feature":
        return [doc]
    if kind in _POLYGONS:
        return [{"type": "Feature", "geometry": doc, "properties": {}}]
    return []


def read_districts(path: str | os.PathLike, name_field: str | None = None) -> list[Area]:
    """The Polygon and MultiPolygon features of a GeoJSON file (a FeatureCollection, a Feature or a bare
    geometry; lon/lat, RFC 7946), in file order, other features skipped. Named by `name_field` when given,
    else by the `name` property, else the first text property, else "district K" (K: the feature's
    1-based place in the file). GeoError when the file is not GeoJSON, holds no polygon, a polygon is
    invalid or not in lon/lat, a feature lacks `name_field`, or two districts share a name."""
    return parse_districts(_read_text(path, "GeoJSON is UTF-8"), str(path), name_field)


def parse_districts(text: str, path: str, name_field: str | None = None) -> list[Area]:
    """`read_districts` of a GeoJSON file's text (an upload); `path` is used in messages."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise GeoError(f"{path}, line {e.lineno}: not JSON ({e.msg})") from None
    areas: list[Area] = []
    first: dict[str, int] = {}
    for k, feature in enumerate(_features(doc), 1):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONS:
            continue
        props = feature.get("properties")
        name = _district_name(props if isinstance(props, dict) else {}, name_field, k, str(path))
        try:
            geom = shapely.force_2d(shape(geometry))
        except Exception as e:  # noqa: BLE001 (shapely's errors on malformed coordinates)
            raise GeoError(f"{path}: district {name!r} has malformed coordinates ({e})") from None
        if geom.is_empty or not geom.is_valid:
            reason = "no coordinates" if geom.is_empty else explain_validity(geom)
            raise GeoError(f"{path}: district {name!r} is not a valid polygon ({reason})")
        west, south, east, north = geom.bounds
        if west < -180 or east > 180 or south < -90 or north > 90:
            raise GeoError(f"{path}: district {name!r} is not in lon/lat degrees (bounds {geom.bounds}); "
                           "GeoJSON is WGS 84 lon/lat (RFC 7946): reproject the file to EPSG:4326")
        if name in first:
            raise GeoError(f"{path}: two districts are named {name!r} (features {first[name]} and {k})")
        first[name] = k
        areas.append(Area(name, geom))
    if not areas:
        raise GeoError(f"{path}: no Polygon or MultiPolygon feature (is it a GeoJSON file of districts?)")
    return areas


def areas_of(places: Sequence[Place | None], areas: Sequence[Area]) -> list[str | None]:
    """`area_of` for many places at once (None for a None place)."""
    names: list[str | None] = [None] * len(places)
    located = [i for i, p in enumerate(places) if p is not None]
    if not located or not areas:
        return names
    points = shapely.points([(places[i].lon, places[i].lat) for i in located])
    tree = shapely.STRtree([a.geometry for a in areas])  # built once per call: one call places every image
    hit_point, hit_area = tree.query(points, predicate="covered_by")
    first = np.full(len(located), len(areas))
    np.minimum.at(first, hit_point, hit_area)  # the first area in file order, where several cover a point
    for i, a in zip(located, first.tolist()):
        names[i] = areas[a].name if a < len(areas) else None
    return names


def area_of(place: Place, areas: Sequence[Area]) -> str | None:
    """The name of the first area (in order) that covers the place, its boundary included; None outside all."""
    return areas_of([place], areas)[0]


# ---- GeoJSON (RFC 7946) -------------------------------------------------------------------------------

def _lists(x: Any) -> Any:
    return [_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _feature(geometry: dict | None, properties: dict) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": dict(properties)}


def point_feature(place: Place | None, properties: dict) -> dict:
    """A Point feature at [lon, lat]; geometry null for an image with no place (RFC 7946 3.2)."""
    return _feature(None if place is None else {"type": "Point", "coordinates": [place.lon, place.lat]}, properties)


def line_feature(places: Sequence[Place], properties: dict) -> dict:
    """A LineString feature through the places in order; geometry null with fewer than 2 places."""
    coords = [[p.lon, p.lat] for p in places]
    return _feature({"type": "LineString", "coordinates": coords} if len(coords) >= 2 else None, properties)


def area_feature(area: Area, properties: dict) -> dict:
    """A Polygon or MultiPolygon feature, exterior rings counterclockwise and holes clockwise (RFC 7946 3.1.6)."""
    geometry = mapping(shapely.orient_polygons(area.geometry))
    return _feature({"type": geometry["type"], "coordinates": _lists(geometry["coordinates"])}, properties)


def feature_collection(features: list[dict], **members) -> dict:
    """A FeatureCollection of `features`, with extra top-level members (e.g. name=...)."""
    if {"type", "features"} & members.keys():
        raise ValueError("type and features are the collection's own members")
    return {"type": "FeatureCollection", "features": list(features), **members}


def _plain(x: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python values, NaN and infinities as None."""
    if isinstance(x, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    return None if isinstance(x, float) and not math.isfinite(x) else x


def to_geojson(collection: dict) -> str:
    """GeoJSON text of a collection: one feature per line, NaN and infinities as null (JSON has no NaN),
    numpy numbers as plain numbers, non-ASCII text as is (UTF-8)."""
    def dump(x):
        return json.dumps(x, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    doc = _plain(collection)
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        return dump(doc)
    head = dump({k: v for k, v in doc.items() if k != "features"})[:-1]
    return head + ("," if len(head) > 1 else "") + '"features":[\n' + ",\n".join(map(dump, features)) + "\n]}"
