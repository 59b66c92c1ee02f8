"""The built-in demo catalogue: Kaggle's layout filled with generated product photos.

Each photo is one item on a white studio background: a silhouette drawn per articleType,
filled with its baseColour, shaded, mildly patterned, placed with varying scale, position
and rotation, with pixel noise. Labels follow the real catalogue's per-article spread,
so a fresh machine has something real-shaped to explore and train on without a download.
"""

import math
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from core.data import STYLES_COLUMNS
from core.data.catalogue import write_styles

WIDTH, HEIGHT = 240, 320  # 3:4 portrait, like the real catalogue's photos
JPEG_QUALITY = 90
MIN_ROWS = 50  # below this the rarest article type would not appear twice
MARKER = ".fashion-tagger-demo"  # marks a folder as ours, so a rerun may replace it
BACKGROUND = 255


class Pen:
    """Draws an item in its own frame: x, y in [-1, 1] across its box, y pointing down.

    `shade` 1 is the base colour; below 1 darker (times the colour), above 1 lighter
    (that far toward white). The pen fills the item's mask and its shade map at once.
    """

    def __init__(self, centre: tuple[float, float], half: tuple[float, float], angle: float,
                 mirror: bool = False):
        self.mask = Image.new("L", (WIDTH, HEIGHT), 0)
        self.shade = Image.new("L", (WIDTH, HEIGHT), 128)  # shade 1.0 is stored as 128
        self._drawers = (ImageDraw.Draw(self.mask), ImageDraw.Draw(self.shade))
        cos, sin = math.cos(angle), math.sin(angle)
        flip = -1 if mirror else 1
        self._matrix = np.array([[flip * half[0] * cos, flip * half[0] * sin],
                                 [-half[1] * sin, half[1] * cos]])
        self._centre = np.asarray(centre)
        self._half_width = half[0]
        self.aspect = half[0] / half[1]  # the box's width / height

    def _to_pixels(self, points: Sequence[tuple[float, float]] | np.ndarray) -> list[tuple]:
        return [tuple(p) for p in np.asarray(points, dtype=float) @ self._matrix + self._centre]

    def _fills(self, shade: float) -> tuple[int, int]:
        return 255, min(255, round(shade * 128))

    def polygon(self, points, shade: float = 1.0) -> None:
        xy = self._to_pixels(points)
        for draw, fill in zip(self._drawers, self._fills(shade)):
            draw.polygon(xy, fill=fill)

    def line(self, points, width: float, shade: float = 1.0) -> None:
        """A polyline `width` wide, in units of the box's half-width."""
        xy, pixels = self._to_pixels(points), max(1, round(width * self._half_width))
        for draw, fill in zip(self._drawers, self._fills(shade)):
            draw.line(xy, fill=fill, width=pixels, joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, shade: float = 1.0) -> None:
        self.polygon(arc(cx, cy, rx, ry, 0, 360), shade)

    def circle(self, cx: float, cy: float, r: float, shade: float = 1.0) -> None:
        """A round circle of radius `r` half-widths, whatever the box's aspect."""
        self.ellipse(cx, cy, r, r * self.aspect, shade)


def arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float,
        steps: int = 24) -> np.ndarray:
    """Points (steps, 2) on an ellipse from angle `start` to `stop` (degrees, y down)."""
    t = np.radians(np.linspace(start, stop, steps))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def symmetric(half: Sequence[tuple[float, float]]) -> np.ndarray:
    """A left-right symmetric outline from its left half, listed top to bottom."""
    left = np.asarray(half, dtype=float)
    return np.concatenate([left, left[::-1] * [-1, 1]])


# --- Silhouettes, one per article type -------------------------------------------------

def draw_tshirt(pen: Pen) -> None:
    pen.polygon(symmetric([(-0.22, -0.92), (-0.55, -0.84), (-1.0, -0.42), (-0.76, -0.2),
                           (-0.58, -0.36), (-0.58, 0.95)]))
    pen.line(arc(0, -0.92, 0.22, 0.2, 0, 180, 12), 0.07, 0.75)  # ribbed crew neck
    pen.line([(-0.98, -0.4), (-0.78, -0.22)], 0.06, 0.85)
    pen.line([(0.98, -0.4), (0.78, -0.22)], 0.06, 0.85)


def draw_shirt(pen: Pen) -> None:
    pen.polygon(symmetric([(-0.16, -0.95), (-0.48, -0.86), (-0.7, -0.7), (-0.98, 0.74),
                           (-0.74, 0.8), (-0.55, -0.25), (-0.52, 0.9), (-0.2, 0.98)]))
    pen.polygon([(-0.18, -0.96), (0, -0.72), (-0.3, -0.7)], 0.72)  # collar points
    pen.polygon([(0.18, -0.96), (0, -0.72), (0.3, -0.7)], 0.72)
    pen.line([(0, -0.72), (0, 0.97)], 0.05, 0.85)  # placket
    for y in np.linspace(-0.55, 0.75, 5):
        pen.circle(0, y, 0.035, 0.55)
    for x in (-0.86, 0.86):
        pen.line([(x - 0.12, 0.68), (x + 0.12, 0.74)], 0.08, 0.8)  # cuffs


def draw_jeans(pen: Pen) -> None:
    pen.polygon([(-0.85, -1.0), (0.85, -1.0), (0.9, -0.85), (0.97, 1.0), (0.1, 1.0),
                 (0, -0.32), (-0.1, 1.0), (-0.97, 1.0), (-0.9, -0.85)])
    pen.line([(-0.87, -0.91), (0.87, -0.91)], 0.14, 0.8)  # waistband
    pen.line([(0, -0.84), (0.02, -0.4)], 0.04, 0.7)  # fly
    pen.line(arc(-0.9, -0.84, 0.45, 0.35, 0, 90, 8), 0.04, 1.3)  # pocket stitching
    pen.line(arc(0.9, -0.84, 0.45, 0.35, 90, 180, 8), 0.04, 1.3)


def draw_shorts(pen: Pen) -> None:
    pen.polygon([(-0.82, -0.9), (0.82, -0.9), (1.0, 0.85), (0.08, 0.92), (0, 0.05),
                 (-0.08, 0.92), (-1.0, 0.85)])
    pen.line([(-0.84, -0.8), (0.84, -0.8)], 0.16, 0.8)  # waistband
    pen.line([(-0.98, 0.76), (-0.1, 0.82)], 0.08, 0.8)  # hems
    pen.line([(0.98, 0.76), (0.1, 0.82)], 0.08, 0.8)


def draw_dress(pen: Pen) -> None:
    pen.polygon(symmetric([(-0.14, -0.72), (-0.36, -0.76), (-0.4, -0.5), (-0.28, -0.18),
                           (-1.0, 0.9), (-0.5, 0.97)]))
    pen.line([(-0.3, -0.74), (-0.2, -1.0)], 0.07)  # straps
    pen.line([(0.3, -0.74), (0.2, -1.0)], 0.07)
    pen.line([(-0.3, -0.2), (0.3, -0.2)], 0.08, 0.75)  # waist seam
    for x in (-0.45, 0, 0.45):
        pen.line([(x * 0.3, -0.12), (x, 0.9)], 0.04, 0.88)  # skirt folds


def draw_casual_shoe(pen: Pen) -> None:
    pen.polygon([(-1.0, 0.45), (-0.97, -0.55), (-0.78, -0.62), (-0.45, -0.3), (-0.05, -0.55),
                 (0.45, -0.25), (0.85, 0.05), (1.0, 0.35), (1.0, 0.5)])
    pen.polygon([(-1.0, 0.42), (1.0, 0.45), (0.98, 0.78), (-0.98, 0.78)], 0.65)  # flat sole
    pen.line([(-0.92, 0.3), (0.92, 0.33)], 0.025, 0.75)  # welt stitching
    pen.line([(-0.42, -0.28), (-0.05, -0.52)], 0.03, 0.7)  # lacing edge
    for x in (-0.34, -0.22, -0.1):
        pen.line([(x, -0.4), (x + 0.14, -0.32)], 0.035, 0.55)  # laces


def draw_sports_shoe(pen: Pen) -> None:
    pen.polygon([(-0.97, 0.25), (-0.92, -0.85), (-0.72, -0.98), (-0.52, -0.6), (-0.05, -0.72),
                 (0.5, -0.3), (0.9, 0.0), (1.0, 0.25)])
    pen.polygon([(-0.98, 0.2), (1.0, 0.2), (0.98, 0.72), (0.6, 0.84), (0.2, 0.72),
                 (-0.2, 0.84), (-0.6, 0.72), (-1.0, 0.84)], 0.7)  # thick tread sole
    pen.line([(-0.95, 0.4), (0.98, 0.4)], 0.09, 1.35)  # midsole band
    pen.line(arc(-0.15, -0.45, 0.8, 0.6, 160, 50, 12), 0.1, 1.35)  # side stripe
    pen.line([(-0.9, -0.86), (-0.74, -0.96)], 0.12, 0.6)  # heel tab
    for x in (-0.45, -0.3, -0.15, 0.0):
        pen.line([(x, -0.66), (x + 0.1, -0.52)], 0.04, 0.55)  # laces


def draw_heel(pen: Pen) -> None:
    pen.polygon([(-0.95, -0.62), (-0.75, -0.52), (-0.2, 0.02), (0.25, 0.32), (0.62, 0.36),
                 (0.92, 0.5), (1.0, 0.74), (0.94, 0.84), (0.35, 0.84), (-0.6, 0.02),
                 (-0.92, -0.16)])
    pen.polygon([(-0.92, -0.22), (-0.76, -0.12), (-0.8, 1.0), (-0.88, 1.0)], 0.7)  # stiletto
    pen.line([(-0.9, -0.18), (-0.55, 0.06), (0.35, 0.86), (0.94, 0.86)], 0.05, 0.6)  # sole edge


def draw_flip_flops(pen: Pen) -> None:
    for cx in (-0.5, 0.5):
        sole = arc(0, 0, 1, 0.98, 0, 360, 32)
        sole[:, 0] *= 0.42 - 0.1 * sole[:, 1]  # a footprint: wider at the toes than the heel
        pen.polygon(sole + [cx, 0])
        post = (cx, -0.62)
        pen.line([(cx - 0.36, 0.0), post, (cx + 0.36, 0.0)], 0.09, 0.55)  # the Y strap
        pen.circle(*post, 0.06, 0.45)


def draw_handbag(pen: Pen) -> None:
    pen.line(arc(0, -0.25, 0.45, 0.7, 180, 360, 16), 0.09, 0.8)  # handle
    pen.polygon([(-0.82, -0.25), (0.82, -0.25), (1.0, 0.95), (-1.0, 0.95)])
    pen.polygon([(-0.84, -0.25), (0.84, -0.25), (0.88, 0.12), (0, 0.28), (-0.88, 0.12)], 0.82)
    pen.polygon([(-0.08, 0.12), (0.08, 0.12), (0.08, 0.32), (-0.08, 0.32)], 1.4)  # clasp


def draw_backpack(pen: Pen) -> None:
    pen.line(arc(0, -0.82, 0.2, 0.16, 180, 360, 10), 0.07, 0.7)  # grab handle
    pen.polygon(np.concatenate([arc(0, -0.35, 0.82, 0.5, 180, 360, 16),
                                [(0.85, 0.92), (0.7, 1.0), (-0.7, 1.0), (-0.85, 0.92)]]))
    pen.polygon(np.concatenate([arc(0, 0.25, 0.6, 0.2, 180, 360, 12),
                                [(0.62, 0.9), (-0.62, 0.9)]]), 0.82)  # front pocket
    pen.line(arc(0, -0.35, 0.68, 0.38, 190, 350, 14), 0.04, 0.55)  # zip
    pen.line(arc(0, 0.25, 0.5, 0.12, 190, 350, 10), 0.04, 0.55)


def draw_watch(pen: Pen) -> None:
    pen.polygon([(-0.52, -1.0), (0.52, -1.0), (0.62, 0.0), (0.52, 1.0), (-0.52, 1.0),
                 (-0.62, 0.0)])  # strap
    pen.polygon([(0.85, -0.06), (1.0, -0.06), (1.0, 0.06), (0.85, 0.06)], 0.6)  # crown
    pen.circle(0, 0, 0.9, 0.65)  # case
    pen.circle(0, 0, 0.74, 1.2)  # dial
    for angle in range(0, 360, 30):
        t = math.radians(angle)
        pen.line([(0.6 * math.cos(t), 0.6 * math.sin(t) * pen.aspect),
                  (0.7 * math.cos(t), 0.7 * math.sin(t) * pen.aspect)], 0.06, 0.4)  # hour marks
    pen.line([(0, 0), (0.08, -0.24)], 0.08, 0.35)  # hands
    pen.line([(0, 0), (0.45, 0.06)], 0.06, 0.35)


def draw_cap(pen: Pen) -> None:
    pen.polygon(np.concatenate([arc(-0.15, 0.3, 0.8, 1.0, 180, 360, 20),
                                [(0.3, 0.22), (1.0, 0.42), (0.96, 0.6), (0.2, 0.5),
                                 (-0.95, 0.4)]]))
    pen.polygon([(0.25, 0.26), (1.0, 0.44), (0.96, 0.6), (0.2, 0.5)], 0.75)  # brim
    pen.line(arc(-0.15, 0.3, 0.32, 1.0, 200, 270, 10), 0.035, 0.75)  # panel seams
    pen.line(arc(-0.15, 0.3, 0.32, 1.0, 270, 340, 10), 0.035, 0.75)
    pen.circle(-0.15, -0.68, 0.07, 0.6)  # button
    pen.line([(-0.94, 0.33), (0.3, 0.3)], 0.08, 0.85)  # sweatband


def draw_belt(pen: Pen) -> None:
    pen.polygon([(-0.78, -0.3), (0.86, -0.3), (1.0, 0.0), (0.86, 0.3), (-0.78, 0.3)])
    pen.line([(-0.98, -0.46), (-0.72, -0.46), (-0.72, 0.46), (-0.98, 0.46), (-0.98, -0.46)],
             0.05, 0.45)  # buckle frame
    pen.line([(-0.98, 0.0), (-0.66, 0.0)], 0.03, 0.45)  # prong
    for x in (0.45, 0.55, 0.65, 0.75):
        pen.circle(x, 0, 0.018, 0.4)  # holes
    pen.line([(-0.6, -0.22), (0.84, -0.22)], 0.01, 0.75)  # edge stitching
    pen.line([(-0.6, 0.22), (0.84, 0.22)], 0.01, 0.75)


# --- The registry ---------------------------------------------------------------------

# pattern -> its word in the product name, and how often a patterned article wears it
PATTERNS = {"plain": "", "stripes": "Striped", "checks": "Checked", "dots": "Printed"}
PATTERN_WEIGHTS = {"plain": 2, "stripes": 1, "checks": 1, "dots": 1}


@dataclass(frozen=True)
class Article:
    """An article type's fixed labels, its label spreads (weights from the real catalogue),
    and how to draw it: `aspect` is the item's width / height."""

    masterCategory: str
    subCategory: str
    genders: dict[str, float]
    usages: dict[str, float]
    seasons: dict[str, float]
    aspect: float
    draw: Callable[[Pen], None]
    patterned: bool = False


# In the real catalogue's frequency order: rows are drawn Zipf-like by rank.
ARTICLES: dict[str, Article] = {
    "Tshirts": Article("Apparel", "Topwear",
                       {"Men": 74, "Women": 16, "Boys": 8, "Girls": 1, "Unisex": 1},
                       {"Casual": 86, "Sports": 14},
                       {"Summer": 62, "Fall": 35, "Winter": 2, "Spring": 1}, 1.0, draw_tshirt, True),
    "Shirts": Article("Apparel", "Topwear", {"Men": 88, "Women": 9, "Boys": 3},
                      {"Casual": 72, "Formal": 28},
                      {"Fall": 55, "Summer": 42, "Winter": 2, "Spring": 1}, 0.85, draw_shirt, True),
    "Casual Shoes": Article("Footwear", "Shoes", {"Men": 79, "Women": 12, "Unisex": 8, "Boys": 1},
                            {"Casual": 1},
                            {"Summer": 50, "Fall": 31, "Winter": 15, "Spring": 4}, 2.1,
                            draw_casual_shoe),
    "Watches": Article("Accessories", "Watches", {"Men": 58, "Women": 36, "Unisex": 6},
                       {"Casual": 97, "Sports": 2, "Formal": 1}, {"Winter": 97, "Summer": 3},
                       0.42, draw_watch),
    "Sports Shoes": Article("Footwear", "Shoes", {"Men": 78, "Women": 20, "Unisex": 2},
                            {"Sports": 1},
                            {"Summer": 58, "Fall": 36, "Spring": 4, "Winter": 2}, 1.9,
                            draw_sports_shoe),
    "Handbags": Article("Accessories", "Bags", {"Women": 96, "Unisex": 4}, {"Casual": 1},
                        {"Summer": 57, "Winter": 36, "Fall": 6, "Spring": 1}, 1.15,
                        draw_handbag, True),
    "Heels": Article("Footwear", "Shoes", {"Women": 1}, {"Casual": 97, "Formal": 3},
                     {"Winter": 77, "Summer": 16, "Fall": 4, "Spring": 3}, 1.45, draw_heel),
    "Flip Flops": Article("Footwear", "Flip Flops",
                          {"Men": 54, "Women": 27, "Unisex": 16, "Boys": 2, "Girls": 1},
                          {"Casual": 1}, {"Summer": 51, "Fall": 29, "Winter": 16, "Spring": 4},
                          0.95, draw_flip_flops),
    "Belts": Article("Accessories", "Belts", {"Men": 67, "Women": 32, "Unisex": 1},
                     {"Casual": 83, "Formal": 17},
                     {"Summer": 67, "Winter": 19, "Fall": 12, "Spring": 2}, 3.2, draw_belt),
    "Backpacks": Article("Accessories", "Bags", {"Unisex": 87, "Men": 8, "Women": 5},
                         {"Casual": 87, "Sports": 11, "Travel": 2},
                         {"Summer": 50, "Winter": 26, "Fall": 18, "Spring": 6}, 0.8,
                         draw_backpack, True),
    "Jeans": Article("Apparel", "Bottomwear",
                     {"Men": 55, "Women": 37, "Boys": 5, "Girls": 2, "Unisex": 1}, {"Casual": 1},
                     {"Summer": 59, "Fall": 35, "Winter": 4, "Spring": 2}, 0.55, draw_jeans),
    "Shorts": Article("Apparel", "Bottomwear", {"Men": 71, "Women": 13, "Boys": 10, "Girls": 6},
                      {"Casual": 65, "Sports": 35},
                      {"Summer": 64, "Fall": 30, "Winter": 5, "Spring": 1}, 1.0, draw_shorts, True),
    "Dresses": Article("Apparel", "Dress", {"Women": 84, "Girls": 16}, {"Casual": 95, "Party": 5},
                       {"Summer": 70, "Fall": 27, "Winter": 3}, 0.75, draw_dress, True),
    "Caps": Article("Accessories", "Headwear", {"Unisex": 50, "Men": 40, "Women": 10},
                    {"Casual": 73, "Sports": 27},
                    {"Summer": 52, "Fall": 42, "Winter": 4, "Spring": 2}, 1.3, draw_cap),
}

# baseColour -> RGB as the colour looks in a studio photo; in the real catalogue's
# frequency order, drawn Zipf-like by rank (flatter than the articles).
COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (30, 30, 32), "White": (240, 240, 238), "Blue": (45, 95, 190),
    "Brown": (115, 72, 42), "Grey": (130, 130, 132), "Red": (195, 35, 40),
    "Green": (40, 130, 70), "Pink": (235, 135, 170), "Navy Blue": (28, 42, 105),
    "Purple": (125, 50, 150), "Yellow": (240, 200, 50), "Beige": (210, 185, 140),
    "Orange": (240, 125, 40),
}

ARTICLE_ZIPF, COLOUR_ZIPF = 0.8, 0.6
BRANDS = ("Northwind", "Lumen", "Urban Loom", "Kestrel", "Marlow & Co", "Tidewater",
          "Red Fern", "Aster", "Quill", "Hollis", "Vantage", "Saffron Lane")
YEARS = (2010, 2018)
MISSING_SEASON, MISSING_USAGE = 0.005, 0.01  # shares left empty, as in the real file


def zipf(k: int, exponent: float) -> np.ndarray:
    """Shares (k,) proportional to 1 / rank**exponent, summing to 1."""
    weights = 1.0 / np.arange(1, k + 1) ** exponent
    return weights / weights.sum()


def article_counts(n: int) -> dict[str, int]:
    """Rows per article type: two each, the rest shared Zipf-like by largest remainder."""
    spare = n - 2 * len(ARTICLES)
    quotas = spare * zipf(len(ARTICLES), ARTICLE_ZIPF)
    counts = np.floor(quotas).astype(int)
    counts[np.argsort(counts - quotas)[: spare - counts.sum()]] += 1
    return {name: 2 + int(c) for name, c in zip(ARTICLES, counts)}


def _choose(rng: np.random.Generator, weights: dict[str, float], size: int) -> np.ndarray:
    p = np.array(list(weights.values()), dtype=float)
    return rng.choice(list(weights), size=size, p=p / p.sum())


def sample_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """The demo catalogue's labels without images: STYLES_COLUMNS plus `pattern`, n rows."""
    check_inputs(n, seed)
    rng = np.random.default_rng(seed)
    articles = np.repeat(list(ARTICLES), list(article_counts(n).values()))[rng.permutation(n)]
    rows = pd.DataFrame({
        "id": rng.choice(90_000, size=n, replace=False) + 10_000,
        "articleType": articles,
        "baseColour": rng.choice(list(COLOURS), size=n, p=zipf(len(COLOURS), COLOUR_ZIPF)),
        "year": rng.integers(YEARS[0], YEARS[1] + 1, size=n),
        "brand": rng.choice(BRANDS, size=n),
    })
    for column in ("gender", "masterCategory", "subCategory", "season", "usage", "pattern"):
        rows[column] = ""
    for name, article in ARTICLES.items():
        at = (rows["articleType"] == name).to_numpy()
        size = int(at.sum())
        rows.loc[at, "masterCategory"] = article.masterCategory
        rows.loc[at, "subCategory"] = article.subCategory
        rows.loc[at, "gender"] = _choose(rng, article.genders, size)
        rows.loc[at, "usage"] = _choose(rng, article.usages, size)
        rows.loc[at, "season"] = _choose(rng, article.seasons, size)
        patterns = PATTERN_WEIGHTS if article.patterned else {"plain": 1}
        rows.loc[at, "pattern"] = _choose(rng, patterns, size)
    words = [rows["brand"], rows["gender"], rows["baseColour"],
             rows["pattern"].map(PATTERNS), rows["articleType"]]
    rows["productDisplayName"] = [" ".join(w for w in parts if w) for parts in zip(*words)]
    rows["season"] = rows["season"].mask(rng.random(n) < MISSING_SEASON)
    rows["usage"] = rows["usage"].mask(rng.random(n) < MISSING_USAGE)
    return rows[[*STYLES_COLUMNS, "pattern"]]


# --- Rendering ------------------------------------------------------------------------

_Y, _X = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
NOISE_SIGMA = 2.5
# A fixed bank of sensor noise; each photo takes its own window, far cheaper than drawing anew.
_NOISE = np.random.default_rng(0).normal(0, NOISE_SIGMA, (2 * HEIGHT, 2 * WIDTH, 3)).astype("float32")
OUTLINE_SHADE, OUTLINE_PX = 0.8, 2  # keeps White items visible on the white background
SOFTEN = ImageFilter.GaussianBlur(0.6)  # anti-aliases the drawn edges


def _outline(inside: np.ndarray) -> np.ndarray:
    """The (HEIGHT, WIDTH) bool rim, OUTLINE_PX thick, just inside the item's edge."""
    k, core = OUTLINE_PX, inside.copy()
    core[k:] &= inside[:-k]
    core[:-k] &= inside[k:]
    core[:, k:] &= inside[:, :-k]
    core[:, :-k] &= inside[:, k:]
    return inside & ~core


def _pattern(kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """Where the pattern's second tone goes, (HEIGHT, WIDTH) bool; thin so the colour dominates."""
    if kind == "plain":
        return None
    period = rng.uniform(12, 20)
    if kind == "dots":
        dx, dy = (_X % period) - period / 2, (_Y % period) - period / 2
        return dx * dx + dy * dy < (period * 0.22) ** 2
    across = (_Y % period) < period * 0.25
    return across if kind == "stripes" else across | ((_X % period) < period * 0.25)


def render(row: dict, seed: int) -> Image.Image:
    """One WIDTH x HEIGHT RGB product photo for a row of `sample_rows`; its pixels depend
    only on the row and `seed`, so any worker draws the same image."""
    rng = np.random.default_rng((seed, int(row["id"])))
    article = ARTICLES[row["articleType"]]
    # The largest box of the item's aspect that fits, scaled down, moved and turned a little.
    fit = min(HEIGHT / 2, WIDTH / 2 / article.aspect) * rng.uniform(0.72, 0.9)
    half = (fit * article.aspect, fit)
    slack = np.array([WIDTH / 2 - half[0], HEIGHT / 2 - half[1]]).clip(0) * 0.6
    centre = np.array([WIDTH / 2, HEIGHT / 2]) + slack * rng.uniform(-1, 1, 2)
    pen = Pen(tuple(centre), half, math.radians(rng.uniform(-8, 8)), rng.random() < 0.5)
    article.draw(pen)

    shade = np.asarray(pen.shade.filter(SOFTEN), dtype=np.float32) / 128
    rim = _outline(np.asarray(pen.mask) > 0)
    shade[rim] = np.minimum(shade[rim], OUTLINE_SHADE)
    light = math.radians(rng.uniform(0, 360))
    ramp = _X * math.cos(light) + _Y * math.sin(light)
    shade *= 1.06 - 0.12 * (ramp - ramp.min()) / (ramp.max() - ramp.min())  # soft side light
    base = np.array(COLOURS[row["baseColour"]], dtype=np.float32)
    pattern = _pattern(row["pattern"], rng)
    if pattern is not None:
        shade[pattern] *= 0.85 if base.mean() > 90 else 1.2  # darker on light, lighter on dark

    darker, lighter = np.minimum(shade, 1)[..., None], np.maximum(shade - 1, 0)[..., None]
    colour = darker * base + lighter * (255 - base)
    alpha = np.asarray(pen.mask.filter(SOFTEN), dtype=np.float32)[..., None] / 255
    dy, dx = rng.integers(HEIGHT), rng.integers(WIDTH)
    pixels = BACKGROUND + alpha * (colour - BACKGROUND) + _NOISE[dy:dy + HEIGHT, dx:dx + WIDTH]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _render_chunk(rows: list[dict], seed: int, images: Path) -> int:
    for row in rows:
        render(row, seed).save(images / f"{row['id']}.jpg", quality=JPEG_QUALITY)
    return len(rows)


# --- The entry point ------------------------------------------------------------------

def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_inputs(n: int, seed: int) -> None:
    """Raise ValueError naming `n` or `seed` unless both can make a demo."""
    if not _is_int(n) or n < MIN_ROWS:
        raise ValueError(f"n={n!r}: the demo needs an integer n >= {MIN_ROWS} rows, so every "
                         f"one of its {len(ARTICLES)} article types appears at least twice")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r}: the demo's seed must be an integer >= 0")


def _prepare(out: Path) -> None:
    """Make `out` an empty folder, replacing a previous demo but nothing else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; give a folder for the demo catalogue")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(f"out={str(out)!r} is a non-empty folder that is not a previous "
                             "demo; give an empty or new folder (nothing was overwritten)")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("Generated by core.data.demo; regenerating replaces this folder.\n")


def generate_demo(out: Path, n: int = 1500, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a demo catalogue to `out`: `styles.csv` (STYLES_COLUMNS, n rows) and
    `images/<id>.jpg` (WIDTH x HEIGHT RGB). Identical for the same `seed`.

    Photos are drawn in chunks by a pool of os.cpu_count() threads; `progress(done, n)`
    is called in this process as chunks finish (at least every 5 %). Returns `out`.
    """
    out = Path(out)
    rows = sample_rows(n, seed)  # validates n and seed before anything touches the disk
    _prepare(out)
    write_styles(rows, out)
    records = rows.to_dict("records")
    chunk = max(1, math.ceil(n / 40))
    done = 0
    # Threads, not processes: numpy and Pillow release the GIL while drawing and encoding, so
    # threads scale as well as processes here (measured), and they work from Streamlit's script
    # thread, where a spawned process would re-run the dashboard script as its __main__.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        jobs = [pool.submit(_render_chunk, records[i:i + chunk], seed, out / "images")
                for i in range(0, n, chunk)]
        for job in as_completed(jobs):
            done += job.result()
            if progress is not None:
                progress(done, n)
    return out
