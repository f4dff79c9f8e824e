"""Procedural street scenes written in the official Cityscapes directory layout.

This is the embedded default dataset (`python -m engine synth`): the loader that reads a real
Cityscapes download reads it unchanged.

    leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png        RGB
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png         uint8 label ids
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_instanceIds.png      uint16 (id*1000+k)
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_color.png            RGB label colours
    README.txt                                                                     written last

Scene model: a pinhole camera 1.3 m above a flat street that runs straight ahead towards a
vanishing point. Everything is placed in metres (X right, Y up, Z forward) and projected, so
objects shrink with depth; discrete objects are painted far to near (painter's algorithm), which
gives occlusion. Every shape is rasterised with the same cv2 call into the image, the label-id map
and the instance map, so labels match the drawn pixels exactly; image-only details (windows, lane
marks, lamps) are confined to the pixels of the object they decorate. Texture noise and lighting
are applied at the end and never touch the labels.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label

from engine.classes import CLASS_NAMES, LABEL_ID_TO_TRAIN_ID, NAME_TO_LABEL_ID, TRAIN_LABELS

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------
TRAIN_CITIES = ("synthtown", "synthville")
VAL_CITIES = ("synthburg",)
SPLITS = ("train", "val")
FRAME = 19                      # Cityscapes annotates frame 19 of each 30-frame snippet
MIN_SIZE = (64, 32)             # (width, height)
MAX_ATTEMPTS = 40               # re-renders allowed to satisfy `require`
CAM_H = 1.3                     # camera height above the road, metres
SHIFT = 3                       # cv2 sub-pixel bits for all polygons
PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 3]

LID = NAME_TO_LABEL_ID
HAS_INSTANCES = frozenset(i for i, l in id2label.items() if i >= 0 and l.hasInstances)
LABEL_COLORS = np.zeros((256, 3), np.uint8)            # label id -> official colour (RGB)
for _i, _l in id2label.items():
    if _i >= 0:
        LABEL_COLORS[_i] = _l.color

# Rarest classes first: the dataset writer forces the missing ones into scenes in this order.
RARITY_ORDER = ("train", "rider", "motorcycle", "bus", "truck", "bicycle", "traffic light", "wall",
                "fence", "terrain", "traffic sign", "person", "pole", "car", "vegetation", "sidewalk",
                "building", "sky", "road")
assert sorted(RARITY_ORDER) == sorted(CLASS_NAMES) and len(TRAIN_LABELS) == 19

# Texture noise per label: (fine grain, blotches) standard deviation in grey levels.
TEXTURE = {
    "unlabeled": (8, 10), "ego vehicle": (2, 3), "static": (5, 5), "dynamic": (5, 5), "ground": (10, 12),
    "road": (5, 7), "sidewalk": (7, 5), "parking": (6, 8), "rail track": (11, 6), "building": (5, 7),
    "wall": (6, 9), "fence": (5, 4), "guard rail": (3, 3), "bridge": (5, 6), "pole": (3, 2),
    "traffic light": (2, 2), "traffic sign": (2, 2), "vegetation": (15, 20), "terrain": (12, 14),
    "sky": (1.5, 2.5), "person": (4, 2), "rider": (4, 2), "car": (3, 3), "truck": (3, 3), "bus": (3, 3),
    "train": (3, 3), "motorcycle": (3, 2), "bicycle": (3, 2),
}
FINE_NOISE = np.zeros(256, np.float32)
COARSE_NOISE = np.zeros(256, np.float32)
for _n, (_f, _c) in TEXTURE.items():
    FINE_NOISE[LID[_n]], COARSE_NOISE[LID[_n]] = _f, _c
GREEN_NOISE = np.zeros(256, np.float32)                # extra green-channel blotches
GREEN_NOISE[LID["vegetation"]], GREEN_NOISE[LID["terrain"]] = 14, 8
GROUND_LABELS = [LID[n] for n in ("road", "sidewalk", "parking", "rail track", "terrain", "ground")]

# Colour families (RGB). Each scene picks one entry and jitters it.
SKY_CLEAR = ((75, 125, 205), (185, 210, 240))          # zenith, horizon
SKY_OVERCAST = ((165, 172, 185), (215, 218, 222))
ROAD = ((88, 86, 94), (72, 72, 78), (105, 100, 108))
LANE_MARK = ((225, 225, 220), (230, 215, 150))
SIDEWALK = ((168, 162, 158), (178, 150, 140), (150, 150, 142), (190, 182, 170))
PARKING = ((125, 112, 118), (140, 128, 120))
RAIL_BED = ((112, 98, 86), (96, 92, 90))
GROUND = ((142, 122, 96), (128, 118, 104))
TERRAIN = ((122, 156, 72), (150, 152, 88), (104, 140, 66))
VEGETATION = ((62, 104, 42), (48, 90, 38), (78, 118, 50), (56, 96, 56))
TRUNK = ((84, 66, 50), (96, 86, 74))
BUILDING = ((182, 164, 134), (152, 94, 72), (122, 120, 126), (196, 184, 160), (172, 142, 112),
            (112, 102, 96), (192, 172, 152), (150, 128, 118))
GLASS = ((48, 58, 74), (96, 116, 138), (70, 76, 84))
WALL = ((176, 170, 158), (150, 140, 124), (160, 160, 166))
FENCE = ((112, 116, 110), (140, 108, 78), (72, 104, 82))
GUARD_RAIL = ((186, 186, 192), (168, 170, 174))
POLE = ((118, 122, 122), (58, 66, 60), (44, 44, 46))
LIGHT_HOUSING = ((34, 34, 30), (48, 48, 44), (200, 170, 40))
LAMPS = ((230, 35, 25), (245, 170, 20), (40, 225, 95))
CAR = ((198, 200, 206), (32, 32, 36), (230, 230, 232), (146, 22, 28), (34, 54, 116), (92, 92, 98),
       (62, 74, 62), (150, 150, 162))
TRUCK = ((232, 232, 226), (200, 60, 42), (42, 82, 160), (212, 182, 44), (140, 144, 150))
BUS = ((232, 200, 42), (200, 40, 40), (60, 122, 192), (230, 232, 230))
TRAM = ((240, 240, 234), (222, 200, 40), (40, 100, 172), (200, 36, 36))
TWO_WHEEL = ((28, 28, 32), (170, 30, 30), (40, 60, 142), (200, 200, 204))
TYRE = (24, 24, 26)
CLOTHES = ((40, 50, 92), (30, 30, 36), (122, 122, 128), (170, 42, 42), (220, 220, 214), (182, 160, 120),
           (60, 92, 60), (96, 60, 110))
SKIN = ((230, 190, 160), (192, 142, 112), (122, 86, 62))
HAIR = ((40, 30, 22), (120, 90, 52), (200, 180, 132), (70, 70, 70))
STATIC = ((44, 82, 52), (92, 92, 96), (200, 120, 32), (120, 82, 52))
DYNAMIC = ((62, 62, 142), (150, 40, 110), (70, 120, 120))
SIGN = {"prohibit": ((200, 30, 30), (240, 240, 240)), "mandatory": ((30, 70, 170), (240, 240, 240)),
        "warning": ((200, 30, 30), (245, 245, 235)), "priority": ((235, 235, 235), (240, 190, 20)),
        "info": ((30, 70, 170), (235, 235, 235))}


# ----------------------------------------------------------------------------------------------
# Canvas, projection and drawing primitives
# ----------------------------------------------------------------------------------------------
def _new_scene(rng, width, height):
    yh = height * rng.uniform(0.36, 0.48)
    f = width * rng.uniform(0.7, 0.95)
    return {
        "rng": rng, "W": width, "H": height, "yh": yh, "xv": width * rng.uniform(0.42, 0.58), "f": f,
        "zg": f * CAM_H / (height - yh),            # depth of the ground seen at the image bottom
        "rgb": np.zeros((height, width, 3), np.float32),
        "lab": np.zeros((height, width), np.uint8),
        "inst": np.zeros((height, width), np.int32),
        "count": {},
    }


def _proj(sc, X, Y, Z):
    """World points (metres) -> Nx2 pixel coordinates."""
    fz = sc["f"] / np.asarray(Z, np.float64)
    x = sc["xv"] + np.asarray(X, np.float64) * fz
    y = sc["yh"] + (CAM_H - np.asarray(Y, np.float64)) * fz
    out = np.empty(np.broadcast_shapes(x.shape, y.shape) + (2,))
    out[..., 0], out[..., 1] = x, y
    return out.reshape(-1, 2)


def _bb(sc, X, Z, uv):
    """Billboard: 2D points (u right, v up, metres) in the plane at depth Z around X -> pixels."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    return _proj(sc, X + uv[:, 0], uv[:, 1], Z)


def _ellipse(cu, cv, ru, rv, n=18):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cu + ru * np.cos(t), cv + rv * np.sin(t)], axis=1)


def _fx(poly):
    return np.round(np.asarray(poly, np.float64).reshape(-1, 1, 2) * (1 << SHIFT)).astype(np.int32)


def _inst(sc, name):
    """Next instance id of a class with instances (official convention: labelId * 1000 + k)."""
    if LID[name] not in HAS_INSTANCES:
        raise ValueError(f"{name!r} has no instances in the official label table")
    k = sc["count"].get(name, 0)
    sc["count"][name] = k + 1
    return LID[name] * 1000 + k


def _fill(sc, polys, name, color, inst=None):
    """Fill polygon(s) (a list = one even-odd region, e.g. a ring) in image, labels and instances.
    Returns the instance-map value written (the label id for classes without instances)."""
    lid = LID[name]
    val = lid if inst is None else inst
    pts = [_fx(p) for p in (polys if isinstance(polys, list) else [polys])]
    cv2.fillPoly(sc["rgb"], pts, tuple(float(c) for c in color), cv2.LINE_8, SHIFT)
    cv2.fillPoly(sc["lab"], pts, lid, cv2.LINE_8, SHIFT)
    cv2.fillPoly(sc["inst"], pts, val, cv2.LINE_8, SHIFT)
    return val


def _line(sc, pts, width_px, name, color, inst=None, closed=False):
    """A thick polyline (bicycle frames, wheel rims, limbs) in image, labels and instances."""
    lid = LID[name]
    val = lid if inst is None else inst
    p, t = [_fx(pts)], max(1, int(round(width_px)))
    cv2.polylines(sc["rgb"], p, closed, tuple(float(c) for c in color), t, cv2.LINE_8, SHIFT)
    cv2.polylines(sc["lab"], p, closed, lid, t, cv2.LINE_8, SHIFT)
    cv2.polylines(sc["inst"], p, closed, val, t, cv2.LINE_8, SHIFT)
    return val


def _region(sc, polys, width_px=None):
    """Mask (and its top-left corner) of polygons filled, or polylines of `width_px`, clipped to the image."""
    pts = [_fx(p) for p in polys]
    allp = np.concatenate(pts).reshape(-1, 2) >> SHIFT
    x0, y0 = max(0, int(allp[:, 0].min()) - 2), max(0, int(allp[:, 1].min()) - 2)
    x1, y1 = min(sc["W"], int(allp[:, 0].max()) + 3), min(sc["H"], int(allp[:, 1].max()) + 3)
    if x1 <= x0 or y1 <= y0:
        return None, 0, 0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    off = np.array([x0, y0], np.int32) << SHIFT
    pts = [p - off for p in pts]
    if width_px is None:
        for p in pts:
            cv2.fillPoly(mask, [p], 1, cv2.LINE_8, SHIFT)
    else:
        cv2.polylines(mask, pts, False, 1, max(1, int(round(width_px))), cv2.LINE_8, SHIFT)
    return mask.view(bool), x0, y0


def _detail(sc, polys, color, within, width_px=None):
    """Image-only paint (windows, lamps, lane marks) restricted to pixels whose instance value is `within`."""
    if not polys:
        return
    mask, x0, y0 = _region(sc, polys, width_px)
    if mask is None:
        return
    h, w = mask.shape
    sel = mask & (sc["inst"][y0:y0 + h, x0:x0 + w] == within)
    sc["rgb"][y0:y0 + h, x0:x0 + w][sel] = color


def _shade(sc, polys, factor):
    """Darken the ground (cast shadows); labels untouched."""
    mask, x0, y0 = _region(sc, polys)
    if mask is None:
        return
    h, w = mask.shape
    sel = mask & np.isin(sc["lab"][y0:y0 + h, x0:x0 + w], GROUND_LABELS)
    sc["rgb"][y0:y0 + h, x0:x0 + w][sel] *= factor


def _pick(rng, family, jitter=10.0):
    base = np.asarray(family[rng.integers(len(family))], np.float64)
    return np.clip(base + rng.normal(0, jitter, 3), 0, 255)


def _box(sc, X0, X1, Y0, Y1, Z0, Z1, name, color, inst=None):
    """Axis-aligned 3D box: draws its camera-facing side, its top or bottom, then its front (Z0) face.
    Returns (instance-map value, x of the visible side face or None)."""
    color = np.asarray(color, np.float64)
    xs = X0 if X0 > 0 else (X1 if X1 < 0 else None)
    if xs is not None:
        inst = _fill(sc, _side_quad(sc, xs, Y0, Y1, Z0, Z1), name, color * 0.78, inst)
    if Y1 < CAM_H:
        inst = _fill(sc, _proj(sc, [X0, X1, X1, X0], [Y1] * 4, [Z0, Z0, Z1, Z1]), name, np.minimum(color * 1.08, 255), inst)
    elif Y0 > CAM_H:
        inst = _fill(sc, _proj(sc, [X0, X1, X1, X0], [Y0] * 4, [Z0, Z0, Z1, Z1]), name, color * 0.6, inst)
    inst = _fill(sc, _front_quad(sc, X0, X1, Y0, Y1, Z0), name, color, inst)
    return inst, xs


def _side_quad(sc, xs, Ya, Yb, Za, Zb):
    return _proj(sc, [xs] * 4, [Ya, Ya, Yb, Yb], [Za, Zb, Zb, Za])


def _front_quad(sc, Xa, Xb, Ya, Yb, Z):
    return _proj(sc, [Xa, Xb, Xb, Xa], [Ya, Ya, Yb, Yb], [Z] * 4)


def _ground_quad(sc, Xa, Xb, Za, Zb):
    return _proj(sc, [Xa, Xb, Xb, Xa], [0.0] * 4, [Za, Za, Zb, Zb])


def _side_disk(sc, xs, Yc, Zc, r, n=14):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _proj(sc, np.full(n, xs), Yc + r * np.sin(t), Zc + r * np.cos(t))


# ----------------------------------------------------------------------------------------------
# Visibility helpers
# ----------------------------------------------------------------------------------------------
def _zvis(sc, X, half_width, top=0.0, margin=1.0):
    """Smallest depth at which an object centred at X, `half_width` wide and `top` high, stands fully in the frame."""
    z = sc["f"] * CAM_H / (sc["H"] - margin - sc["yh"])
    if top > CAM_H:
        z = max(z, sc["f"] * (top - CAM_H) / (sc["yh"] - margin))
    if X - half_width < 0:
        z = max(z, sc["f"] * (half_width - X) / (sc["xv"] - margin))
    if X + half_width > 0:
        z = max(z, sc["f"] * (X + half_width) / (sc["W"] - margin - sc["xv"]))
    return z


def _z_any(sc, X, zmax):
    """Log-uniform depth between where X enters the frame and zmax (partly cut objects allowed)."""
    lo = max(sc["zg"] * 1.05, _zvis(sc, X, 0.0))
    if lo >= zmax:
        return lo
    return lo * (zmax / lo) ** sc["rng"].uniform()


# ----------------------------------------------------------------------------------------------
# Scene layout: road, lanes, bands of sidewalk / parking / terrain on both sides
# ----------------------------------------------------------------------------------------------
def _layout(sc, require):
    rng = sc["rng"]
    left, right = -rng.uniform(4.6, 10.0), rng.uniform(2.2, 5.0)
    tram = "train" in require or rng.random() < 0.15
    n_lanes = len({"car", "truck", "bus"} & require) + int(tram)            # a lane for each required vehicle
    left = min(left, -1.5 - 3.3 * (n_lanes - 1))
    lanes = [0.0]
    while lanes[-1] - 3.3 - 1.4 >= left:
        lanes.append(lanes[-1] - 3.3)
    if right >= 3.3 + 1.4:
        lanes.append(3.3)
    rail = min(lanes) if (tram or rng.random() < 0.08) else None
    sides = {}
    for s, edge in ((-1, left), (1, right)):
        bands = []
        if rng.random() < 0.3:
            bands.append(("parking", 2.3))
        if rng.random() < 0.3 or ("terrain" in require and s == 1):
            bands.append(("terrain", rng.uniform(1.0, 2.5)))
        if rng.random() < 0.9 or ("sidewalk" in require and s == 1):
            bands.append(("sidewalk", rng.uniform(2.5, 5.5)))
        city = rng.random() < 0.75 or ("building" in require and s == 1)
        if city and rng.random() < 0.3:
            bands.append(("ground", rng.uniform(0.5, 1.5)))
        yard = city and rng.random() < 0.25
        out = edge + s * sum(w for _, w in bands)
        facade = (out + s * rng.uniform(3.0, 7.0)) if yard else out
        sides[s] = {"edge": edge, "bands": bands, "out": out, "city": city, "facade": facade, "yard": yard}
    return {"left": left, "right": right, "lanes": lanes, "tram": tram, "rail": rail, "sides": sides,
            "zfar": rng.uniform(70.0, 140.0)}


# ----------------------------------------------------------------------------------------------
# Backdrop: sky, distant skyline, ground bands, facades
# ----------------------------------------------------------------------------------------------
def _draw_sky(sc, pal):
    rng, H, W = sc["rng"], sc["H"], sc["W"]
    t = np.clip(np.arange(H, dtype=np.float32) / sc["yh"], 0, 1)[:, None, None]
    sc["rgb"][:] = pal["zenith"] * (1 - t) + pal["horizon"] * t
    sc["lab"][:] = LID["sky"]
    sc["inst"][:] = LID["sky"]
    for _ in range(rng.integers(0, 4)):                                     # clouds
        cx, cy = rng.uniform(0, W), rng.uniform(0, sc["yh"] * 0.6)
        blobs = [_ellipse(cx + rng.uniform(-0.06, 0.06) * W, cy + rng.uniform(-0.02, 0.02) * H,
                          rng.uniform(0.03, 0.09) * W, rng.uniform(0.015, 0.04) * H) for _ in range(3)]
        for b in blobs:
            _detail(sc, [b], np.minimum(pal["horizon"] + 25, 255), LID["sky"])


def _draw_skyline(sc, lay, pal):
    """Far buildings across the whole width at depth zfar, hazy; distant clutter near the vanishing point."""
    rng, zf = sc["rng"], lay["zfar"]
    haze = 0.2
    x_left = (0 - sc["xv"]) * zf / sc["f"] - 5
    x_right = (sc["W"] - sc["xv"]) * zf / sc["f"] + 5
    X = x_left
    while X < x_right:
        w = rng.uniform(8, 28)
        if rng.random() < 0.85:
            col = _pick(rng, BUILDING, 12) * (1 - haze) + pal["horizon"] * haze
            top = min(rng.uniform(6, 36), 0.7 * sc["yh"] * zf / sc["f"])        # leave some sky
            _fill(sc, _front_quad(sc, X, X + w, -0.5, top, zf), "building", col)
        X += w
    if rng.random() < 0.6:                                                  # distant tree clumps
        for _ in range(rng.integers(2, 7)):
            Xc, r = rng.uniform(x_left, x_right), rng.uniform(3, 8)
            col = _pick(rng, VEGETATION, 8) * (1 - haze) + pal["horizon"] * haze
            _fill(sc, _bb(sc, Xc, zf * 0.97, _ellipse(0, r * 0.8, r, r)), "vegetation", col)
    if rng.random() < 0.1:                                                  # a bridge over the street
        zb = rng.uniform(35, 60)
        _box(sc, -60, 60, 5.5, 7.0, zb, zb + 8, "bridge", _pick(rng, WALL, 10))
    if rng.random() < 0.85:                                                 # unlabeled clutter at the end of the street
        w, h = rng.uniform(2, 6), rng.uniform(1.5, 5)
        _fill(sc, _front_quad(sc, -w, w, -0.5, h, zf * 0.9), "unlabeled", _pick(rng, GROUND + WALL, 20))


def _draw_ground(sc, lay, pal):
    rng, sides = sc["rng"], lay["sides"]
    zn, zf = sc["zg"] * 0.3, lay["zfar"]
    # Beyond the bands: gravel ("ground") behind city sides, grass behind parks.
    for s, side in sides.items():
        name = "ground" if side["city"] else "terrain"
        _fill(sc, _ground_quad(sc, side["out"], side["out"] + s * 300, zn, zf), name, pal[name])
    # Road, lane marks, crossings.
    road = _fill(sc, _ground_quad(sc, lay["left"], lay["right"], zn, zf), "road", pal["road"])
    marks, zs = [], np.arange(rng.uniform(0, 9), zf, 9.0)
    for a, b in zip(sorted(lay["lanes"])[:-1], sorted(lay["lanes"])[1:]):
        xm = (a + b) / 2
        marks += [_ground_quad(sc, xm - 0.07, xm + 0.07, z, z + 3.0) for z in zs if z + 3 > zn]
    for xe in (lay["left"] + 0.25, lay["right"] - 0.25):
        if rng.random() < 0.7:
            marks.append(_ground_quad(sc, xe - 0.06, xe + 0.06, zn, zf))
    if rng.random() < 0.25:                                                 # zebra crossing
        zc = rng.uniform(8, 25)
        xs = np.arange(lay["left"] + 0.5, lay["right"] - 0.5, 1.0)
        marks += [_ground_quad(sc, x, x + 0.5, zc, zc + 3.5) for x in xs]
    _detail(sc, marks, pal["lane"], road)
    if lay["rail"] is not None:
        xt = lay["rail"]
        bed = _fill(sc, _ground_quad(sc, xt - 0.85, xt + 0.85, zn, zf), "rail track", pal["rail track"])
        steel = [_ground_quad(sc, xt + o - 0.05, xt + o + 0.05, zn, zf) for o in (-0.72, 0.72)]
        _detail(sc, steel, (176, 176, 182), bed)
    # Bands from the road edge outwards.
    for s, side in sides.items():
        x = side["edge"]
        for name, w in side["bands"]:
            xa, xb = sorted((x, x + s * w))
            val = _fill(sc, _ground_quad(sc, xa, xb, zn, zf), name, pal[name])
            if name == "parking":
                bays = [_ground_quad(sc, xa, xb, z, z + 0.12) for z in np.arange(rng.uniform(0, 5), zf, 5.5)]
                _detail(sc, bays, pal["lane"], val)
            elif name == "sidewalk":
                xc = x + s * 0.2                                            # kerb stones
                _detail(sc, [_ground_quad(sc, *sorted((x, xc)), zn, zf)], np.minimum(pal[name] * 1.15, 255), val)
            x += s * w
    # Cast shadow of one side's houses across part of the street.
    if rng.random() < 0.5:
        s = int(rng.choice([-1, 1]))
        xf = sides[s]["facade"]
        _shade(sc, [_ground_quad(sc, xf, xf - s * rng.uniform(2, 9), zn, zf)], rng.uniform(0.55, 0.8))


def _draw_facades(sc, lay, pal):
    """Blocks of houses along city sides (segments of different height and colour, windows, shops)."""
    rng = sc["rng"]
    for s, side in lay["sides"].items():
        if not side["city"]:
            continue
        xf, z = side["facade"], lay["zfar"]
        segments = []
        while z > 0.6:
            length = rng.uniform(8, 25)
            z0 = max(0.5, z - length)
            if rng.random() < 0.12 and z0 > 0.5:                           # alley: a gap between blocks
                z = z0 - rng.uniform(3, 7)
                continue
            segments.append((z0, z))
            z = z0
        for z0, z1 in segments:                                             # far to near
            hb, col = rng.uniform(8, 26), _pick(rng, BUILDING, 12)
            X0, X1 = sorted((xf, xf + s * 15))
            val, xs = _box(sc, X0, X1, 0.0, hb, z0, z1, "building", col)
            if xs is None or z0 > 70:
                continue
            fh, sp = rng.uniform(2.8, 3.6), rng.uniform(2.2, 4.0)
            glass = _pick(rng, GLASS, 10)
            wins = []
            for yb in np.arange(fh + 0.3 * fh, hb - 0.8 * fh, fh):
                for za in np.arange(z0 + 0.6, z1 - sp * 0.6, sp):
                    wins.append(_side_quad(sc, xs, yb, yb + 0.55 * fh, za, za + 0.5 * sp))
            _detail(sc, wins[: len(wins) // 2], glass, val)
            _detail(sc, wins[len(wins) // 2:], np.minimum(glass * 1.25, 255), val)
            if rng.random() < 0.5:                                          # shop windows on the ground floor
                _detail(sc, [_side_quad(sc, xs, 0.3, 0.75 * fh, z0 + 0.5, z1 - 0.5)], glass * 0.8, val)
            _detail(sc, [_side_quad(sc, xs, hb - 0.5, hb, z0, z1)], col * 0.6, val)   # cornice


def _draw_treeline(sc, lay, pal):
    """Parks: a bumpy wall of trees some metres behind the sidewalk."""
    rng = sc["rng"]
    for s, side in lay["sides"].items():
        if side["city"]:
            continue
        xt = side["out"] + s * rng.uniform(3, 12)
        zs = np.geomspace(0.6, lay["zfar"], 40)
        tops = rng.uniform(5, 12, len(zs))
        pts = _proj(sc, np.full(len(zs) * 2, xt), np.concatenate([np.zeros(len(zs)), tops[::-1]]),
                    np.concatenate([zs, zs[::-1]]))
        _fill(sc, pts, "vegetation", pal["vegetation"] * 0.85)


# ----------------------------------------------------------------------------------------------
# Objects (each draws itself at a depth; painted far to near)
# ----------------------------------------------------------------------------------------------
def _wheels_side(sc, xs, zs, r, inst, name):
    for zc in zs:
        _fill(sc, _side_disk(sc, xs, r, zc, r), name, TYRE, inst)


def _car(sc, X, Z):
    rng = sc["rng"]
    w, L, h = rng.uniform(1.7, 1.9), rng.uniform(4.0, 4.8), rng.uniform(1.38, 1.6)
    col, away = _pick(rng, CAR, 10), rng.random() < 0.7
    inst = _inst(sc, "car")
    X0, X1 = X - w / 2, X + w / 2
    for xa in (X0 + 0.1, X1 - 0.35):                                        # tyres under the body
        _fill(sc, _front_quad(sc, xa, xa + 0.25, 0.0, 0.35, Z + 0.6), "car", TYRE, inst)
    _, xs = _box(sc, X0, X1, 0.3, 0.95, Z, Z + L, "car", col, inst)
    zc0, zc1 = Z + (0.25 if away else 0.3) * L, Z + (0.7 if away else 0.75) * L
    _box(sc, X0 + 0.1, X1 - 0.1, 0.95, h, zc0, zc1, "car", col * 0.95, inst)
    if xs is not None:
        _wheels_side(sc, xs, (Z + 0.18 * L, Z + 0.8 * L), 0.33, inst, "car")
        _detail(sc, [_side_quad(sc, X0 + 0.1 if X0 > 0 else X1 - 0.1, 1.0, h - 0.08, zc0 + 0.1, zc1 - 0.1)],
                (52, 60, 72), inst)
    _detail(sc, [_front_quad(sc, X0 + 0.2, X1 - 0.2, 1.0, h - 0.08, zc0)], (50, 58, 70), inst)
    lamp = (215, 30, 30) if away else (240, 236, 210)
    _detail(sc, [_front_quad(sc, X0 + 0.05, X0 + 0.35, 0.7, 0.88, Z), _front_quad(sc, X1 - 0.35, X1 - 0.05, 0.7, 0.88, Z)],
            lamp, inst)
    _detail(sc, [_front_quad(sc, X - 0.26, X + 0.26, 0.42, 0.53, Z)], (232, 232, 226), inst)


def _truck(sc, X, Z):
    rng = sc["rng"]
    w, Lc = rng.uniform(2.3, 2.55), rng.uniform(5.5, 8.0)
    cargo, cab, away = _pick(rng, TRUCK, 10), _pick(rng, TRUCK, 10), rng.random() < 0.6
    inst = _inst(sc, "truck")
    X0, X1 = X - w / 2, X + w / 2
    for xa in (X0 + 0.1, X1 - 0.5):
        _fill(sc, _front_quad(sc, xa, xa + 0.4, 0.0, 0.55, Z + 0.8), "truck", TYRE, inst)
    if away:
        _box(sc, X0 + 0.05, X1 - 0.05, 0.5, 3.0, Z + Lc + 0.3, Z + Lc + 2.5, "truck", cab, inst)
        _box(sc, X0 + 0.3, X1 - 0.3, 0.4, 0.95, Z, Z + Lc, "truck", (40, 40, 44), inst)
        _, xs = _box(sc, X0, X1, 0.95, rng.uniform(3.2, 3.8), Z, Z + Lc, "truck", cargo, inst)
        _detail(sc, [_front_quad(sc, X - 0.02, X + 0.02, 1.0, 3.1, Z)], cargo * 0.6, inst, width_px=1)
        _detail(sc, [_front_quad(sc, X0 + 0.05, X0 + 0.3, 1.0, 1.15, Z), _front_quad(sc, X1 - 0.3, X1 - 0.05, 1.0, 1.15, Z)],
                (215, 30, 30), inst)
        if xs is not None:
            _wheels_side(sc, xs, (Z + 0.9, Z + 2.2, Z + Lc + 1.6), 0.5, inst, "truck")
    else:
        _box(sc, X0, X1, 0.95, rng.uniform(3.2, 3.8), Z + 2.5, Z + 2.5 + Lc, "truck", cargo, inst)
        _, xs = _box(sc, X0 + 0.05, X1 - 0.05, 0.5, 3.0, Z, Z + 2.3, "truck", cab, inst)
        _detail(sc, [_front_quad(sc, X0 + 0.2, X1 - 0.2, 1.7, 2.7, Z)], (50, 60, 72), inst)
        _detail(sc, [_front_quad(sc, X0 + 0.5, X1 - 0.5, 0.7, 1.2, Z)], (40, 40, 44), inst)
        if xs is not None:
            _wheels_side(sc, xs, (Z + 1.2, Z + 2.5 + Lc - 1.5), 0.5, inst, "truck")


def _long_vehicle(sc, X, Z, name):
    """Bus or tram: a long box with a band of windows."""
    rng = sc["rng"]
    if name == "bus":
        w, L, y0, y1, col = 2.55, rng.uniform(11, 13), 0.3, 3.1, _pick(rng, BUS, 10)
    else:
        w, L, y0, y1, col = 2.4, rng.uniform(20, 30), 0.35, 3.4, _pick(rng, TRAM, 10)
    inst = _inst(sc, name)
    X0, X1 = X - w / 2, X + w / 2
    if name == "train":                                                     # pantograph and its base
        zp = Z + L * 0.3
        _box(sc, X - 0.5, X + 0.5, y1, y1 + 0.25, zp, zp + 1.5, name, (70, 70, 74), inst)
        _line(sc, _proj(sc, [X, X, X], [y1 + 0.25, y1 + 0.9, y1 + 1.3], [zp + 0.2, zp + 1.0, zp + 0.4]),
              max(1, 0.06 * sc["f"] / zp), name, (50, 50, 54), inst)
    else:
        for xa in (X0 + 0.1, X1 - 0.45):
            _fill(sc, _front_quad(sc, xa, xa + 0.35, 0.0, 0.35, Z + 1.0), name, TYRE, inst)
    _, xs = _box(sc, X0, X1, y0, y1, Z, Z + L, name, col, inst)
    glass = (44, 52, 62)
    if xs is not None:
        wins = [_side_quad(sc, xs, 1.2, y1 - 0.5, za, za + 1.6) for za in np.arange(Z + 0.8, Z + L - 1.6, 2.0)]
        _detail(sc, wins, glass, inst)
        _detail(sc, [_side_quad(sc, xs, y0 + 0.2, y0 + 0.45, Z, Z + L)], col * 0.5, inst)
        if name == "bus":
            _wheels_side(sc, xs, (Z + 2.6, Z + L - 3.0), 0.5, inst, name)
    _detail(sc, [_front_quad(sc, X0 + 0.15, X1 - 0.15, 1.3, y1 - 0.35, Z)], glass, inst)
    _detail(sc, [_front_quad(sc, X0 + 0.15, X0 + 0.45, 0.55, 0.75, Z), _front_quad(sc, X1 - 0.45, X1 - 0.15, 0.55, 0.75, Z)],
            (240, 236, 210), inst)


def _person(sc, X, Z):
    """A pedestrian facing the camera: legs, arms, torso, head."""
    rng, name = sc["rng"], "person"
    s = rng.uniform(1.55, 1.9) / 1.75
    inst = _inst(sc, name)
    legs, top, skin, hair = _pick(rng, CLOTHES, 12), _pick(rng, CLOTHES, 12), _pick(rng, SKIN, 8), _pick(rng, HAIR, 8)
    stride = rng.uniform(0, 0.2) * s
    for sgn in (-1, 1):
        _fill(sc, _bb(sc, X, Z, [(sgn * 0.02 * s, 0.88 * s), (sgn * 0.16 * s, 0.88 * s),
                                 (sgn * (0.1 * s + stride) + 0.06 * s, 0), (sgn * (0.1 * s + stride) - 0.06 * s, 0)]),
              name, legs, inst)
        _fill(sc, _bb(sc, X, Z, [(sgn * 0.17 * s, 1.44 * s), (sgn * 0.26 * s, 1.4 * s),
                                 (sgn * 0.25 * s, 0.85 * s), (sgn * 0.17 * s, 0.86 * s)]), name, top * 0.9, inst)
    _fill(sc, _bb(sc, X, Z, [(-0.19 * s, 0.84 * s), (0.19 * s, 0.84 * s), (0.21 * s, 1.46 * s), (-0.21 * s, 1.46 * s)]),
          name, top, inst)
    _fill(sc, _bb(sc, X, Z, _ellipse(0, 1.6 * s, 0.1 * s, 0.125 * s, 12)), name, skin, inst)
    _detail(sc, [_bb(sc, X, Z, _ellipse(0, 1.68 * s, 0.105 * s, 0.06 * s, 10))], hair, inst)


def _two_wheeler(sc, X, Z, kind, ridden):
    """Side view of a bicycle or motorcycle (crossing the street or parked across the kerb), maybe ridden."""
    rng = sc["rng"]
    d = float(rng.choice([-1.0, 1.0]))
    ppm = sc["f"] / Z
    inst = _inst(sc, kind)
    col = _pick(rng, TWO_WHEEL, 10)
    if kind == "bicycle":
        r, hub = 0.34, 0.55
        for u in (-hub, hub):
            _fill(sc, [_bb(sc, X, Z, _ellipse(u * d, r, r, r)), _bb(sc, X, Z, _ellipse(u * d, r, r * 0.86, r * 0.86))],
                  kind, TYRE, inst)
        frame = [(-hub, r), (-0.05, 0.3), (-0.18, 0.82), (-hub, r), (-0.05, 0.3), (0.38, 0.8), (-0.18, 0.82),
                 (-0.2, 0.9), (-0.18, 0.82), (0.38, 0.8), (hub, r), (0.38, 0.8), (0.33, 1.0)]
        _line(sc, _bb(sc, X, Z, [(u * d, v) for u, v in frame]), 0.05 * ppm, kind, col, inst)
        seat, bar = (-0.2, 0.92), (0.33, 1.0)
    else:
        r, hub = 0.31, 0.68
        for u in (-hub, hub):
            _fill(sc, _bb(sc, X, Z, _ellipse(u * d, r, r, r)), kind, TYRE, inst)
        body = [(-0.9, 0.72), (-0.35, 0.82), (0.15, 0.98), (0.58, 0.96), (0.66, 0.7), (0.3, 0.32), (-0.3, 0.35), (-0.55, 0.55)]
        _fill(sc, _bb(sc, X, Z, [(u * d, v) for u, v in body]), kind, col, inst)
        _line(sc, _bb(sc, X, Z, [(0.55 * d, 0.95), (hub * d, r), (0.45 * d, 1.15)]), 0.07 * ppm, kind, (150, 150, 155), inst)
        _detail(sc, [_bb(sc, X, Z, [(-0.25 * d, 0.38), (0.25 * d, 0.36), (0.2 * d, 0.62), (-0.2 * d, 0.62)])],
                (140, 140, 146), inst)
        seat, bar = (-0.3, 0.9), (0.45, 1.15)
    if not ridden:
        return
    rider = _inst(sc, "rider")
    clothes, skin = _pick(rng, CLOTHES, 12), _pick(rng, SKIN, 8)
    hip, shoulder, head = (seat[0] * d, seat[1] + 0.08), ((seat[0] + 0.22) * d, seat[1] + 0.66), ((seat[0] + 0.3) * d, seat[1] + 0.9)
    knee, foot = ((seat[0] + 0.45) * d, seat[1] - 0.1), ((seat[0] + 0.3) * d, 0.3)
    _line(sc, _bb(sc, X, Z, [hip, knee, foot]), 0.15 * ppm, "rider", clothes * 0.7, rider)
    _line(sc, _bb(sc, X, Z, [hip, shoulder]), 0.36 * ppm, "rider", clothes, rider)
    _line(sc, _bb(sc, X, Z, [shoulder, (bar[0] * d, bar[1])]), 0.1 * ppm, "rider", clothes, rider)
    _fill(sc, _bb(sc, X, Z, _ellipse(head[0], head[1], 0.12, 0.13, 12)), "rider", skin, rider)
    helmet = (kind == "motorcycle") or rng.random() < 0.5
    _detail(sc, [_bb(sc, X, Z, _ellipse(head[0], head[1] + (0.02 if helmet else 0.07), 0.13, 0.12 if helmet else 0.06, 12))],
            _pick(rng, TWO_WHEEL, 10) if helmet else (50, 36, 24), rider)


def _pole(sc, X, Z, kind):
    """Lamp post, traffic light (at the kerb or on an arm over the road) or sign post."""
    rng = sc["rng"]
    d = -1.0 if X > 0 else 1.0                                              # arms reach over the road
    r, col = rng.uniform(0.08, 0.13), _pick(rng, POLE, 8)
    hp = {"lamp": rng.uniform(6, 9), "light": rng.uniform(3.2, 4.2), "arm": rng.uniform(5.5, 7),
          "sign": rng.uniform(2.6, 3.4), "light+sign": rng.uniform(3.4, 4.2)}[kind]
    _box(sc, X - r, X + r, 0.0, hp, Z, Z + 2 * r, "pole", col)
    if kind == "lamp":
        xa = X + d * rng.uniform(1.0, 2.0)
        _box(sc, *sorted((X, xa)), hp - 0.3, hp - 0.18, Z + r - 0.06, Z + r + 0.06, "pole", col)
        _box(sc, xa - 0.3, xa + 0.3, hp - 0.5, hp - 0.25, Z, Z + 2 * r, "pole", (150, 150, 150))
    if kind == "arm":
        xa = X + d * rng.uniform(2.5, 4.5)
        _box(sc, *sorted((X, xa)), hp - 0.4, hp - 0.25, Z + r - 0.07, Z + r + 0.07, "pole", col)
        _traffic_light(sc, xa, hp - 1.35, Z)
    if kind in ("light", "light+sign"):
        _traffic_light(sc, X, hp - 1.0, Z - 0.02)
    if kind in ("sign", "light+sign"):
        _sign(sc, X, (hp if kind == "sign" else hp - 1.1) - 0.05, Z - 0.05)


def _traffic_light(sc, X, y0, Z):
    rng = sc["rng"]
    _box(sc, X - 0.18, X + 0.18, y0, y0 + 0.95, Z - 0.3, Z, "traffic light", _pick(rng, LIGHT_HOUSING, 6))
    lit = rng.integers(3)
    for k, yc in enumerate((y0 + 0.78, y0 + 0.48, y0 + 0.18)):
        col = LAMPS[k] if k == lit else np.asarray(LAMPS[k]) * 0.25
        _detail(sc, [_bb(sc, X, Z - 0.3, _ellipse(0, yc, 0.11, 0.11, 10))], col, LID["traffic light"])


def _sign(sc, X, ytop, Z):
    rng = sc["rng"]
    kind = ("prohibit", "mandatory", "warning", "priority", "info")[rng.integers(5)]
    outer, inner = SIGN[kind]
    a = rng.uniform(0.6, 0.85)
    if kind in ("prohibit", "mandatory"):
        shape, inside = _ellipse(0, ytop - a / 2, a / 2, a / 2, 16), _ellipse(0, ytop - a / 2, a * 0.36, a * 0.36, 16)
    elif kind == "warning":
        shape = [(-a / 2, ytop - a * 0.87), (a / 2, ytop - a * 0.87), (0, ytop)]
        inside = [(-a * 0.3, ytop - a * 0.77), (a * 0.3, ytop - a * 0.77), (0, ytop - a * 0.25)]
    elif kind == "priority":
        shape = [(0, ytop), (a / 2, ytop - a / 2), (0, ytop - a), (-a / 2, ytop - a / 2)]
        inside = [(0, ytop - a * 0.15), (a * 0.35, ytop - a / 2), (0, ytop - a * 0.85), (-a * 0.35, ytop - a / 2)]
    else:
        shape = [(-a * 0.7, ytop), (a * 0.7, ytop), (a * 0.7, ytop - a * 0.5), (-a * 0.7, ytop - a * 0.5)]
        inside = [(-a * 0.6, ytop - 0.1), (a * 0.6, ytop - 0.1), (a * 0.6, ytop - a * 0.42), (-a * 0.6, ytop - a * 0.42)]
    val = _fill(sc, _bb(sc, X, Z, shape), "traffic sign", outer)
    if kind != "mandatory":
        _detail(sc, [_bb(sc, X, Z, inside)], inner, val)


def _tree(sc, X, Z, pal, pit):
    rng = sc["rng"]
    if pit:
        _fill(sc, _ground_quad(sc, X - 0.7, X + 0.7, Z - 0.7, Z + 0.7), "terrain", pal["terrain"])
    ht, R = rng.uniform(2.2, 3.5), rng.uniform(1.4, 3.0)
    _box(sc, X - 0.16, X + 0.16, 0.0, ht + R * 0.5, Z, Z + 0.32, "vegetation", _pick(rng, TRUNK, 8))
    cy = ht + R * 0.8
    for _ in range(rng.integers(6, 12)):
        col = pal["vegetation"] * rng.uniform(0.75, 1.2) + rng.normal(0, 6, 3)
        _fill(sc, _bb(sc, X, Z - 0.01, _ellipse(rng.uniform(-0.7, 0.7) * R, cy + rng.uniform(-0.5, 0.6) * R,
                                                R * rng.uniform(0.35, 0.6), R * rng.uniform(0.35, 0.55), 14)),
              "vegetation", np.clip(col, 0, 255))


def _static(sc, X, Z):
    rng = sc["rng"]
    col, kind = _pick(rng, STATIC, 10), rng.integers(4)
    if kind == 0:                                                           # litter bin
        val, _ = _box(sc, X - 0.28, X + 0.28, 0.0, 0.95, Z, Z + 0.56, "static", col)
        _detail(sc, [_front_quad(sc, X - 0.28, X + 0.28, 0.85, 0.95, Z)], col * 0.6, val)
    elif kind == 1:                                                         # bench
        for xa in (X - 0.75, X + 0.65):
            _box(sc, xa, xa + 0.1, 0.0, 0.45, Z, Z + 0.45, "static", (60, 60, 60))
        _box(sc, X - 0.8, X + 0.8, 0.45, 0.52, Z, Z + 0.45, "static", col)
        _box(sc, X - 0.8, X + 0.8, 0.6, 0.9, Z + 0.4, Z + 0.45, "static", col)
    elif kind == 2:                                                         # bollards
        for k in range(4):
            _box(sc, X - 0.07, X + 0.07, 0.0, 0.9, Z + 1.6 * k, Z + 1.6 * k + 0.14, "static", (70, 70, 74))
    else:                                                                   # advertising column
        val, _ = _box(sc, X - 0.6, X + 0.6, 0.0, 3.2, Z, Z + 1.2, "static", (70, 90, 70))
        for y in (0.6, 1.6):
            _detail(sc, [_front_quad(sc, X - 0.5, X + 0.5, y, y + 0.85, Z)], _pick(rng, CLOTHES + TRUCK, 30), val)


def _dynamic(sc, X, Z):
    rng = sc["rng"]
    col = _pick(rng, DYNAMIC, 12)
    if rng.random() < 0.5:                                                  # wheelie bin / container
        val, _ = _box(sc, X - 0.6, X + 0.6, 0.15, 1.3, Z, Z + 1.0, "dynamic", col)
        for xa in (X - 0.55, X + 0.35):
            _fill(sc, _front_quad(sc, xa, xa + 0.2, 0.0, 0.18, Z + 0.05), "dynamic", TYRE, val)
    else:                                                                   # pram
        val = _fill(sc, _bb(sc, X, Z, [(-0.4, 0.9), (0.35, 0.9), (0.4, 0.45), (-0.35, 0.35)]), "dynamic", col)
        _fill(sc, _bb(sc, X, Z, _ellipse(-0.05, 0.9, 0.38, 0.22, 12)), "dynamic", col * 0.8, val)
        for u in (-0.3, 0.3):
            _fill(sc, _bb(sc, X, Z, _ellipse(u, 0.14, 0.14, 0.14, 10)), "dynamic", TYRE, val)


def _long_structure(sc, items, kind, X, za, zb, pal):
    """Wall, fence, hedge or guard rail along the street, cut in short pieces so it depth-sorts
    correctly against the objects in front of and behind it."""
    rng = sc["rng"]
    h = {"wall": rng.uniform(0.8, 2.4), "fence": rng.uniform(1.0, 2.0), "hedge": rng.uniform(0.8, 1.6),
         "guard rail": 0.8}[kind]
    name = "vegetation" if kind == "hedge" else kind
    col = {"wall": _pick(rng, WALL, 10), "fence": _pick(rng, FENCE, 10), "hedge": pal["vegetation"],
           "guard rail": _pick(rng, GUARD_RAIL, 6)}[kind]
    t = {"wall": 0.3, "fence": 0.06, "hedge": 0.8, "guard rail": 0.1}[kind]
    X0, X1 = (X, X + t) if X > 0 else (X - t, X)                         # X: the face towards the road
    zs = [za]
    while zs[-1] < zb:
        zs.append(min(zb, zs[-1] * 1.2 + 0.3))
    for z0, z1 in zip(zs[:-1], zs[1:]):
        hh = h * rng.uniform(0.9, 1.1) if kind == "hedge" else h
        # Sorted by the far end: what stands on the street in front of the segment is drawn after it.
        items.append((z1, _segment, (kind, name, X0, X1, hh, z0, z1, col)))


def _segment(sc, kind, name, X0, X1, h, z0, z1, col):
    if kind == "guard rail":
        for zp in np.arange(z0, z1, 2.0):
            _box(sc, X0, X1, 0.0, 0.55, zp, zp + 0.1, name, col * 0.8)
        _box(sc, X0, X1, 0.45, h, z0, z1, name, col)
        return
    val, xs = _box(sc, X0, X1, 0.0, h, z0, z1, name, col)
    if xs is None:
        return
    if kind == "fence":                                                     # bars and a top rail
        n = int(min(60, (z1 - z0) / 0.25))
        bars = [_side_quad(sc, xs, 0.0, h, z, z) for z in np.linspace(z0, z1, max(n, 2))]
        _detail(sc, [b[[0, 3]] for b in bars], np.minimum(col * 1.35, 255), val, width_px=1)
        _detail(sc, [_side_quad(sc, xs, h - 0.08, h, z0, z1)], np.minimum(col * 1.35, 255), val)
    elif kind == "wall":                                                    # coping and a joint line
        _detail(sc, [_side_quad(sc, xs, h - 0.1, h, z0, z1)], np.minimum(col * 1.15, 255), val)
        _detail(sc, [_side_quad(sc, xs, h * 0.5 - 0.02, h * 0.5 + 0.02, z0, z1)], col * 0.7, val)


# ----------------------------------------------------------------------------------------------
# Populating a scene
# ----------------------------------------------------------------------------------------------
def _plan(sc, lay, pal, require):
    """List of (depth, draw function, args): traffic, people, street furniture, walls and fences.

    Each required class gets one object, placed so the objects do not hide each other: vehicles side
    by side on screen in the left lanes, a rider beside the car, small things along the right
    sidewalk (see `queue`); walls and fences along the right. Random clutter thins out as the
    number of required classes grows."""
    rng, items = sc["rng"], []
    sides, zmax, zg = lay["sides"], min(lay["zfar"] * 0.8, 70.0), sc["zg"]

    def add(z, fn, *args):
        items.append((z, fn, args))

    def walk_x(s, half_width=0.3):                                          # on the sidewalk (or verge)
        side = sides[s]
        room = abs(side["out"] - side["edge"]) - 0.5 - half_width
        return side["edge"] + s * rng.uniform(0.3 + half_width, max(0.3 + half_width, room))

    def kerb_x(s):
        side = sides[s]
        return side["edge"] + s * (0.5 + (2.3 if side["bands"] and side["bands"][0][0] == "parking" else 0.0))

    def z_at(X, half_width, top, lo, hi):                                   # in view, not too close
        return max(_zvis(sc, X, half_width, top), zg * rng.uniform(lo, hi))

    def queue(state, X, half_width, top, lo=1.5, hi=2.0):
        """Depth for a required object so that on screen it stands between the previous one in its
        queue and the queue's floor (an x position): the right queue fills the image from its right
        border inwards, the left one from its left border. Where it cannot fit it just goes deeper."""
        d, f, xv = state["dir"], sc["f"], sc["xv"]
        z = max(_zvis(sc, X, 0.0, top), zg * rng.uniform(lo, hi))
        outer, inner = d * X + half_width, d * X - half_width               # metres off the axis, queue side
        room_out, room_in = d * (state["x"] - xv), d * (state["floor"] - xv)  # pixels off the centre
        if outer > 0:
            z = max(z, f * outer / room_out if room_out > 0.02 * sc["W"] else np.inf)
        if inner > 0 and room_in > 0 and z > f * inner / room_in:
            z = np.inf
        if not np.isfinite(z):
            z = max(_zvis(sc, X, 0.0, top), state["z"] * 1.3)
        state["x"] = xv + f * (X - d * half_width) / z - d * 2.0
        state["z"] = z
        return z

    # --- required classes -------------------------------------------------------------------
    # Vehicles: a lane each, from the leftmost (the tram's) inwards, side by side on screen.
    left_q = {"dir": -1, "x": 1.0, "z": zg, "floor": sc["xv"]}
    free = sorted(x for x in lay["lanes"] if not (lay["tram"] and x == lay["rail"]))
    if lay["tram"]:                                                         # required or not, a tram on the rails
        X = lay["rail"]
        Z = queue(left_q, X, 1.2, 3.4) if "train" in require else _z_any(sc, X, zmax)
        add(Z, _long_vehicle, X, Z, "train")
    car = None
    for name, hw, top, lo, hi in (("bus", 1.3, 3.1, 1.5, 2.0), ("truck", 1.25, 3.8, 1.5, 2.0),
                                  ("car", 0.95, 1.6, 2.5, 3.5)):
        if name in require:
            X = (free.pop(0) if free else float(rng.choice(lay["lanes"]))) + rng.uniform(-0.3, 0.3)
            Z = queue(left_q, X, hw, top, lo, hi)
            add(Z, _car if name == "car" else (_truck if name == "truck" else _long_vehicle), X, Z,
                *(("bus",) if name == "bus" else ()))
            car = (X, Z) if name == "car" else car
    # Small things: a rider crossing just right of the car, then, from the right
    # border inwards down to the rider, the right sidewalk (which no traffic hides).
    right_q = {"dir": 1, "x": sc["W"] - 1.0, "z": zg, "floor": sc["xv"]}
    bikes = [k for k in ("bicycle", "motorcycle") if k in require]
    if "rider" in require:
        kind = bikes.pop(0) if bikes else ("bicycle" if rng.random() < 0.6 else "motorcycle")
        if car:
            X = car[0] + 0.95 + rng.uniform(1.2, 1.6)                       # beside the car
            Z = max(car[1] * rng.uniform(0.95, 1.05), _zvis(sc, X, 1.0, 1.9))
        else:
            X = lay["right"] - 1.2
            Z = max(_zvis(sc, X, 1.0, 1.9), zg * rng.uniform(2.5, 3.5))
        add(Z, _two_wheeler, X, Z, kind, True)
        right_q["floor"] = sc["xv"] + sc["f"] * (X + 1.0) / Z + 2
    if "person" in require:
        X = walk_x(1)
        add(Z := queue(right_q, X, 0.3, 1.9, 2.0, 3.0), _person, X, Z)
    poles = {"traffic light", "traffic sign", "pole"} & require
    if poles:
        kind = ("light+sign" if {"traffic light", "traffic sign"} <= poles else
                "light" if "traffic light" in poles else "sign")
        X = kerb_x(1)
        add(Z := queue(right_q, X, 0.45, 3.4 if kind == "sign" else 4.2, 2.0, 3.0), _pole, X, Z, kind)
    for kind in bikes:                                                      # parked across the sidewalk
        X = walk_x(1, 1.0)
        add(Z := queue(right_q, X, 1.0, 1.2, 2.5, 3.5), _two_wheeler, X, Z, kind, False)
    if "vegetation" in require:                                             # trees are tall: the far kerb will do
        X = kerb_x(-1) - 0.5
        add(Z := z_at(X, 1.5, 3.5, 1.3, 1.8), _tree, X, Z, pal, rng.random() < 0.5)
    za = None                                                               # wall, then fence, along the right
    for kind in ("wall", "fence"):
        if kind in require:
            X = sides[1]["out"] - 0.4
            za = za or _zvis(sc, X, 0.0) * rng.uniform(0.5, 1.0)
            zb = za + (rng.uniform(8, 20) if kind == "wall" else rng.uniform(12, 30))
            _long_structure(sc, items, kind, X, za, zb, pal)
            za = zb

    # --- everything else, at random (less of it when many classes are required) ------------
    calm = max(0.2, 1.0 - len(require) / 12)
    for name, mean in (("car", 2.5), ("truck", 0.3), ("bus", 0.2)):
        for _ in range(rng.poisson(mean * calm)):
            X = float(rng.choice(lay["lanes"])) + rng.uniform(-0.3, 0.3)
            Z = _z_any(sc, X, zmax)
            add(Z, _car if name == "car" else (_truck if name == "truck" else _long_vehicle), X, Z,
                *(("bus",) if name == "bus" else ()))
    for s, side in sides.items():                                           # parked cars
        if any(b == "parking" for b, _ in side["bands"]):
            for _ in range(rng.poisson(2.0 * calm)):
                X = side["edge"] + s * 1.15
                add(Z := _z_any(sc, X, zmax), _car, X, Z)
    for _ in range(rng.poisson(0.4 * calm)):                                # riders crossing
        X = rng.uniform(lay["left"] + 1.2, lay["right"] - 1.0)
        add(Z := _z_any(sc, X, zmax * 0.6), _two_wheeler, X, Z, "bicycle" if rng.random() < 0.6 else "motorcycle", True)
    for kind in ("bicycle", "motorcycle"):                                  # parked two-wheelers
        for _ in range(rng.poisson(0.5 * calm)):
            X = walk_x(int(rng.choice([-1, 1])), 1.0)
            add(Z := _z_any(sc, X, zmax * 0.6), _two_wheeler, X, Z, kind, False)
    for _ in range(rng.poisson(2.0 * calm)):                                # people, a few crossing
        X = walk_x(int(rng.choice([-1, 1]))) if rng.random() < 0.85 else rng.uniform(lay["left"], lay["right"])
        add(Z := _z_any(sc, X, zmax * 0.7), _person, X, Z)
    for s in sides:
        if rng.random() < 0.6 * calm:                                       # a row of lamp posts
            for z in np.arange(rng.uniform(3, 25), zmax, rng.uniform(20, 35)):
                add(z, _pole, kerb_x(s), z, "lamp")
        if rng.random() < 0.4 * calm:                                       # a row of trees
            xt = kerb_x(s) + s * rng.uniform(0.3, 1.2)
            for z in np.arange(rng.uniform(3, 12), zmax, rng.uniform(7, 12)):
                add(z, _tree, xt, z, pal, rng.random() < 0.5)
    for _ in range(rng.poisson(1.2 * calm)):                                # lights and signs
        X = kerb_x(int(rng.choice([-1, 1])))
        add(Z := _z_any(sc, X, zmax * 0.7), _pole, X, Z, ("light", "arm", "sign", "light+sign")[rng.integers(4)])
    for _ in range(rng.poisson(1.2 * calm)):
        X = walk_x(int(rng.choice([-1, 1])))
        add(Z := _z_any(sc, X, zmax * 0.6), _static, X, Z)
    if rng.random() < 0.3 * calm:
        X = walk_x(int(rng.choice([-1, 1])))
        add(Z := _z_any(sc, X, zmax * 0.6), _dynamic, X, Z)
    for kind, p in (("wall", 0.3), ("fence", 0.25), ("hedge", 0.15)):       # along the outer sidewalk edge
        if kind not in require and rng.random() < p * calm:
            s = int(rng.choice([-1, 1]))
            X = sides[s]["out"] - s * 0.9
            za = rng.uniform(1.0, 30.0)
            _long_structure(sc, items, kind, X, za, za + rng.uniform(12, 50), pal)
    for s, side in sides.items():
        if side["bands"] and side["bands"][0][0] == "terrain" and rng.random() < 0.4:
            _long_structure(sc, items, "guard rail", side["edge"] + s * 0.3, rng.uniform(1, 10), lay["zfar"] * 0.6, pal)
        if side["yard"]:                                                    # front gardens: bushes and trees
            for z in np.arange(rng.uniform(2, 10), zmax, rng.uniform(6, 14)):
                X = side["out"] + s * rng.uniform(0.8, abs(side["facade"] - side["out"]) - 0.8)
                add(z, _tree, X, z, pal, False)
    return items


def _yards(sc, lay, pal):
    for side in lay["sides"].values():
        if side["yard"]:
            name = "terrain" if sc["rng"].random() < 0.7 else "ground"
            _fill(sc, _ground_quad(sc, *sorted((side["out"], side["facade"])), sc["zg"] * 0.3, lay["zfar"]), name, pal[name])


def _ego_and_border(sc):
    rng, W, H = sc["rng"], sc["W"], sc["H"]
    if rng.random() < 0.4:                                                  # the car's own bonnet
        cx, ax, ay = W * rng.uniform(0.45, 0.55), W * rng.uniform(0.55, 0.8), H * rng.uniform(0.07, 0.14)
        val = _fill(sc, _ellipse(cx, H + ay * 0.25, ax, ay, 40), "ego vehicle", _pick(rng, CAR, 6) * 0.7)
        _detail(sc, [_ellipse(cx, H + ay * 0.3, ax * 0.6, ay * 0.8, 30)], np.full(3, 150.0), val)
    if rng.random() < 0.85:                                                 # rectification margin
        b = max(1, round(W / 400))
        for sl in (np.s_[:b, :], np.s_[-b:, :], np.s_[:, :b], np.s_[:, -b:]):
            sc["lab"][sl] = LID["out of roi"]
            sc["inst"][sl] = LID["out of roi"]


def _finish(sc):
    """Texture noise by material, then per-scene brightness, contrast and colour temperature."""
    rng, H, W, lab = sc["rng"], sc["H"], sc["W"], sc["lab"]
    fine = rng.standard_normal((H, W), dtype=np.float32)
    coarse = cv2.resize(rng.standard_normal((H // 6 + 2, W // 6 + 2), dtype=np.float32), (W, H),
                        interpolation=cv2.INTER_LINEAR) * 1.6
    green = cv2.resize(rng.standard_normal((H // 4 + 2, W // 4 + 2), dtype=np.float32), (W, H),
                       interpolation=cv2.INTER_LINEAR) * 1.5
    rgb = sc["rgb"]
    rgb += (FINE_NOISE[lab] * fine + COARSE_NOISE[lab] * coarse)[..., None]
    rgb[..., 1] += GREEN_NOISE[lab] * green
    gain, contrast, temp = rng.uniform(0.75, 1.2), rng.uniform(0.85, 1.15), rng.uniform(-0.08, 0.08)
    scale = np.array([1 + temp, 1.0, 1 - temp], np.float32) * gain * contrast
    rgb *= scale
    rgb += (110 * (1 - contrast) * gain)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def _palette(rng):
    sky = SKY_OVERCAST if rng.random() < 0.2 else SKY_CLEAR
    pal = {"zenith": np.clip(np.asarray(sky[0]) + rng.normal(0, 10, 3), 0, 255),
           "horizon": np.clip(np.asarray(sky[1]) + rng.normal(0, 8, 3), 0, 255)}
    for name, fam, j in (("road", ROAD, 6), ("sidewalk", SIDEWALK, 8), ("parking", PARKING, 8),
                         ("rail track", RAIL_BED, 8), ("ground", GROUND, 10), ("terrain", TERRAIN, 10),
                         ("vegetation", VEGETATION, 8), ("lane", LANE_MARK, 5)):
        pal[name] = _pick(rng, fam, j)
    return pal


def _compose(rng, width, height, require):
    sc = _new_scene(rng, width, height)
    pal = _palette(rng)
    lay = _layout(sc, require)
    _draw_sky(sc, pal)
    _draw_skyline(sc, lay, pal)
    _draw_ground(sc, lay, pal)
    _yards(sc, lay, pal)
    _draw_treeline(sc, lay, pal)
    _draw_facades(sc, lay, pal)
    items = _plan(sc, lay, pal, require)
    for _, fn, args in sorted(items, key=lambda it: -it[0]):                # far to near
        fn(sc, *args)
    _ego_and_border(sc)
    return _finish(sc), sc["lab"], sc["inst"]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def min_pixels(width: int, height: int) -> int:
    """Pixels a class needs in a scene to count as present: 0.1% of the image (8 at 128x64), at least 4."""
    return max(4, width * height // 1000)


def present_classes(label_ids: np.ndarray) -> set[str]:
    """Train classes with at least `min_pixels` pixels in a label-id map."""
    counts = np.bincount(LABEL_ID_TO_TRAIN_ID[label_ids].ravel(), minlength=256)
    need = min_pixels(label_ids.shape[1], label_ids.shape[0])
    return {name for t, name in enumerate(CLASS_NAMES) if counts[t] >= need}


def _check_size(width, height):
    try:
        ok = int(width) == width and int(height) == height and width >= MIN_SIZE[0] and height >= MIN_SIZE[1]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"scene size must be whole pixels of at least {MIN_SIZE[0]}x{MIN_SIZE[1]} (width x height), "
                         f"got {width}x{height}")


def render_scene(rng: np.random.Generator, width: int, height: int, require: set[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (rgb uint8 HxWx3, label_ids uint8 HxW, instance_ids int32 HxW).

    `require`: names of train classes that must appear in this scene (each with at least
    `min_pixels(width, height)` pixels). Each gets an object placed where it stays visible (vehicles
    side by side in the left lanes, small things along the right sidewalk), and the scene is redrawn
    (with the same generator, so still deterministic) until all of them are."""
    _check_size(width, height)
    require = set(require or ())
    unknown = require - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"unknown class name(s) in require: {sorted(unknown)}; expected names from {CLASS_NAMES}")
    for _ in range(MAX_ATTEMPTS):
        rgb, lab, inst = _compose(rng, int(width), int(height), require)
        if require <= present_classes(lab):
            return rgb, lab, inst
    missing = sorted(require - present_classes(lab))
    raise RuntimeError(f"could not fit {missing} into a {width}x{height} scene in {MAX_ATTEMPTS} attempts")


def _write_png(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array, PNG_FLAGS):
        raise OSError(f"could not write {path}")


def scene_size(train, val, size) -> tuple[int, int]:
    """(width, height) after checking the counts and the size; ValueError naming what is wrong."""
    for name, n in (("train", train), ("val", val)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a whole number of images >= 1, got {n!r}")
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    _check_size(width, height)
    return int(width), int(height)


def scenes(train: int = 24, val: int = 8, size: tuple[int, int] = (512, 256), seed: int = 0):
    """The scenes `write_synthetic_dataset` writes, in order, whatever the layout they are written in:
    (split, city, stem, rgb uint8 HxWx3, label_ids uint8 HxW, instance_ids int32 HxW). Every train class
    appears in each split: classes still missing are required, rarest first, in the remaining scenes."""
    width, height = scene_size(train, val, size)
    counts = {"train": int(train), "val": int(val)}
    for split_idx, split in enumerate(SPLITS):
        cities = TRAIN_CITIES if split == "train" else VAL_CITIES
        n, seen = counts[split], set()
        for i in range(n):
            missing = [c for c in RARITY_ORDER if c not in seen]
            require = set(missing[: math.ceil(len(missing) / (n - i))])
            rgb, lab, inst = render_scene(np.random.default_rng([seed, split_idx, i]), width, height, require)
            seen |= present_classes(lab)
            city = cities[i * len(cities) // n]
            seq = i - math.ceil(cities.index(city) * n / len(cities))
            yield split, city, f"{city}_{seq:06d}_{FRAME:06d}", rgb, lab, inst


def write_synthetic_dataset(out, train: int = 24, val: int = 8, size: tuple[int, int] = (512, 256),
                            seed: int = 0) -> dict[str, int]:
    """Writes the dataset under `out`; returns {"train": n, "val": n}. size is (width, height).

    Deterministic for a seed (identical bytes on rerun). Every train class appears in each split
    (see `scenes`). README.txt is removed first and written last, so an interrupted run never looks
    complete."""
    width, height = scene_size(train, val, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.txt"
    readme.unlink(missing_ok=True)
    counts = {"train": int(train), "val": int(val)}
    for split in SPLITS:
        for city in TRAIN_CITIES if split == "train" else VAL_CITIES:     # drop stale scenes of an earlier run
            for kind in ("leftImg8bit", "gtFine"):
                shutil.rmtree(out / kind / split / city, ignore_errors=True)
    for split, city, stem, rgb, lab, inst in scenes(train, val, size, seed):
        img_dir, gt_dir = out / "leftImg8bit" / split / city, out / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        _write_png(img_dir / f"{stem}_leftImg8bit.png", rgb)
        _write_png(gt_dir / f"{stem}_gtFine_labelIds.png", lab)
        _write_png(gt_dir / f"{stem}_gtFine_instanceIds.png", inst.astype(np.uint16))
        _write_png(gt_dir / f"{stem}_gtFine_color.png", LABEL_COLORS[lab])
    tmp = out / "README.txt.tmp"
    tmp.write_text(
        "Synthetic street scenes in the Cityscapes layout (NOT real Cityscapes data).\n"
        "Generated by `python -m engine synth` (engine/data/synthetic.py).\n"
        f"seed: {seed}\nsize: {width}x{height} (width x height)\n"
        f"train: {counts['train']} images (cities {', '.join(TRAIN_CITIES)})\n"
        f"val: {counts['val']} images (city {', '.join(VAL_CITIES)})\n"
        "Labels: gtFine *_labelIds.png (official label ids), *_instanceIds.png (labelId*1000+k for classes\n"
        "with instances), *_color.png (official colours).\n"
    )
    os.replace(tmp, readme)
    return counts


# The built-in dataset's size: small enough for a 2-core CPU, every class in both splits.
DEFAULT_SCENES = dict(train=16, val=6, size=(256, 128), seed=0)


def ensure_synthetic_dataset(root, **scenes) -> bool:
    """Write the built-in synthetic dataset at `root` unless it is already complete (README.txt
    is written last); returns True when it wrote it."""
    if (Path(root) / "README.txt").is_file():
        return False
    print(f"writing the built-in synthetic street scenes to {root} ...", flush=True)
    write_synthetic_dataset(root, **{**DEFAULT_SCENES, **scenes})
    return True
