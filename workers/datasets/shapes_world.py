"""The built-in synthetic "coloured shapes" world: images and captions from a seed.

Every image is ``size`` x ``size`` RGB (32 x 32 by default) and holds one shape of one colour on
a noisy, dark, desaturated tinted background (about a third of the backgrounds are striped).
The shape's colour is jittered, it comes in two sizes (small or large), at a random position with
a small random rotation, and pixel noise is added on top.

There are 10 colours x 10 shapes = 100 classes named ``"<colour> <shape>"`` (e.g. ``"red circle"``).
30 of them are *held out* of pretraining; every colour and every shape has exactly 3 held-out
partners, so a model pretrained on the 70 seen classes has seen every colour and every shape,
just not every combination.

Captions come from 14 templates, sometimes with a size word, a position phrase or a background
phrase, and sometimes with 1-12 filler words in front (so that text positions up to ~32 tokens
are trained). Articles are left as the templates write them ("a photo of a orange circle."),
exactly as the zero-shot template ``"a photo of a {}."`` renders class names.

Public API: ``COLOURS``, ``SHAPES``, ``class_names()``, ``held_out_classes()``, ``seen_classes()``,
``render()``, ``caption()``, ``sample()``.

Bump ``WORLD_VERSION`` whenever what a seed renders changes.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from workers.errors import NotFoundError, did_you_mean

WORLD_VERSION = 1

#: Colour names and their nominal RGB values (before jitter); chosen to stay apart from each other
#: and from the dark, desaturated backgrounds.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (240, 230, 40),
    "green": (40, 175, 50),
    "cyan": (40, 220, 230),
    "blue": (45, 75, 235),
    "purple": (150, 50, 205),
    "pink": (255, 135, 200),
    "brown": (160, 92, 38),
    "white": (245, 245, 245),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "ring",
    "heart",
    "arrow",
    "crescent",
)

# (colour i, shape j) is held out iff (_SHAPE_PERM[j] - i) mod 10 is in _HELD_OUT_OFFSETS. A
# permutation plus three distinct offsets gives every colour and every shape exactly 3 partners.
_SHAPE_PERM = (3, 7, 0, 9, 5, 1, 8, 2, 6, 4)
_HELD_OUT_OFFSETS = frozenset({0, 3, 7})

SIZES = ("small", "large")
BACKGROUNDS = ("plain", "striped")
STRIPE_PROB = 0.35

#: Position keys (row, column of a 3 x 3 grid) and the phrase a caption uses for each.
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the middle",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}
_POSITION_GRID = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

#: Caption templates; "a photo of a {}." (the zero-shot template) is drawn twice as often.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {}.",
    "{}",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of the {}.",
    "a rendering of a {}.",
    "a photo of the {}.",
    "there is a {} in this picture.",
    "a pixelated image of a {}.",
    "a simple drawing of the {}.",
)
_TEMPLATE_P = np.array([2.0] + [1.0] * (len(TEMPLATES) - 1)) / (len(TEMPLATES) + 1)

FILLER_WORDS: tuple[str, ...] = (
    "look",
    "here",
    "is",
    "see",
    "this",
    "nice",
    "quick",
    "simple",
    "tiny",
    "toy",
    "scene",
    "sample",
    "example",
    "random",
    "synthetic",
    "new",
    "old",
    "just",
    "another",
    "one",
)
MAX_FILLER = 12
_SIZE_WORD_PROB = 0.35
_POSITION_PROB = 0.3
_BACKGROUND_PROB = 0.2
_FILLER_PROB = 0.25

_SS = 4  # supersampling factor for anti-aliased shape masks


def _unit_shapes() -> dict[str, list[tuple]]:
    """Each shape as drawing operations in unit coordinates (radius ~1, y pointing up).

    An operation is ``("poly", (k, 2) array, fill)`` or ``("disc", (x, y), r, fill)``; fill 1
    paints the shape, fill 0 erases.
    """

    def regular(n: int, r: float, start_deg: float) -> np.ndarray:
        a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    star = np.empty((10, 2))
    star[0::2] = regular(5, 1.0, 90)
    star[1::2] = regular(5, 0.42, 90 + 36)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    heart = np.stack([16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)], 1)
    heart = heart / 16.5 + np.array([0.0, 0.1])
    w, e = 0.3, 0.95
    cross = np.array(
        [(-w, e), (w, e), (w, w), (e, w), (e, -w), (w, -w), (w, -e), (-w, -e), (-w, -w), (-e, -w), (-e, w), (-w, w)]
    )
    arrow = np.array([(-1.0, 0.22), (0.1, 0.22), (0.1, 0.7), (1.0, 0.0), (0.1, -0.7), (0.1, -0.22), (-1.0, -0.22)])
    return {
        "circle": [("disc", (0.0, 0.0), 0.92, 1)],
        "square": [("poly", np.array([(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)]), 1)],
        "triangle": [("poly", regular(3, 1.05, 90) + np.array([0.0, -0.2]), 1)],
        "star": [("poly", star * 1.05, 1)],
        "cross": [("poly", cross, 1)],
        "diamond": [("poly", np.array([(0.0, 1.0), (0.7, 0.0), (0.0, -1.0), (-0.7, 0.0)]), 1)],
        "ring": [("disc", (0.0, 0.0), 0.95, 1), ("disc", (0.0, 0.0), 0.55, 0)],
        "heart": [("poly", heart, 1)],
        "arrow": [("poly", arrow, 1)],
        "crescent": [("disc", (0.0, 0.0), 0.95, 1), ("disc", (0.45, 0.12), 0.8, 0)],
    }


_UNIT_SHAPES = _unit_shapes()
assert tuple(_UNIT_SHAPES) == SHAPES
_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def class_names() -> list[str]:
    """All 100 class names, ``"<colour> <shape>"``, colour-major (colour i, shape j at 10 i + j)."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def is_held_out(classname: str) -> bool:
    """Whether ``classname`` is one of the 30 combinations held out of pretraining."""
    ci, si = _parse(classname)
    return (_SHAPE_PERM[si] - ci) % len(COLOURS) in _HELD_OUT_OFFSETS


def held_out_classes() -> list[str]:
    """The 30 held-out combinations (3 per colour, 3 per shape), in ``class_names()`` order."""
    return [c for c in class_names() if is_held_out(c)]


def seen_classes() -> list[str]:
    """The 70 combinations seen in pretraining, in ``class_names()`` order."""
    return [c for c in class_names() if not is_held_out(c)]


def balanced_subset(classes: list[str], per_item: int, shape_order: list[int] | None = None) -> list[str]:
    """A deterministic subset of ``classes`` with exactly ``per_item`` classes per colour and per
    shape, in ``class_names()`` order.

    Built from ``per_item`` disjoint perfect colour-shape matchings (augmenting paths, trying
    shapes in ``shape_order``, default 0..9); the seen classes form a 7-regular bipartite graph,
    so the matchings exist for ``per_item`` <= 7.
    """
    order = list(range(len(SHAPES))) if shape_order is None else shape_order
    allowed = {_parse(c) for c in classes}
    chosen: set[tuple[int, int]] = set()
    for _ in range(per_item):
        match = _perfect_matching(allowed - chosen, order)
        if match is None:
            raise ValueError(f"no subset with {per_item} classes per colour and per shape")
        chosen |= {(ci, si) for si, ci in match.items()}
    return [f"{COLOURS[ci]} {SHAPES[si]}" for ci, si in sorted(chosen)]


def _perfect_matching(edges: set[tuple[int, int]], order: list[int]) -> dict[int, int] | None:
    """A colour-shape matching covering every colour (shape -> colour) along ``edges``, by
    augmenting paths trying shapes in ``order``; None when there is none."""
    match: dict[int, int] = {}

    def augment(ci: int, visited: set[int]) -> bool:
        for si in order:
            if (ci, si) in edges and si not in visited:
                visited.add(si)
                if si not in match or augment(match[si], visited):
                    match[si] = ci
                    return True
        return False

    return match if all(augment(ci, set()) for ci in range(len(COLOURS))) else None


def _parse(classname: str) -> tuple[int, int]:
    """(colour index, shape index) of ``classname``; NotFoundError for an unknown one."""
    parts = classname.strip().lower().replace("_", " ").split()
    if len(parts) == 2 and parts[0] in COLOURS and parts[1] in SHAPES:
        return COLOURS.index(parts[0]), SHAPES.index(parts[1])
    raise NotFoundError(
        f"Unknown shapes-world class '{classname}'.{did_you_mean(classname, class_names())}",
        f"use '<colour> <shape>' with a colour in {', '.join(COLOURS)} and a shape in {', '.join(SHAPES)}.",
    )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a size x size image, cached."""
    if size not in _GRIDS:
        _GRIDS[size] = tuple(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5))
    return _GRIDS[size]


def _position_key(x: float, y: float, size: int) -> str:
    """The 3 x 3 grid cell of a shape centred at (x, y); the middle cell spans 40-60 %."""

    def band(v: float) -> int:
        return 0 if v < 0.4 * size else (2 if v > 0.6 * size else 1)

    return _POSITION_GRID[band(y)][band(x)]


def _mask(shape: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (float32 in [0, 1], shape (size, size)) of ``shape``."""
    big = Image.new("L", (size * _SS, size * _SS), 0)
    draw = ImageDraw.Draw(big)
    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, sin], [-sin, cos]])  # rotate counter-clockwise, then flip y (image y is down)
    scale = radius * _SS
    centre = np.array([cx * _SS, cy * _SS])
    for op in _UNIT_SHAPES[shape]:
        if op[0] == "poly":
            pts = op[1] @ rot.T * np.array([1.0, -1.0]) * scale + centre
            draw.polygon([tuple(p) for p in pts.tolist()], fill=255 * op[2])
        else:
            (ux, uy), r, fill = op[1], op[2], op[3]
            px, py = (np.array([ux, uy]) @ rot.T * np.array([1.0, -1.0]) * scale + centre).tolist()
            rr = r * scale
            draw.ellipse((px - rr, py - rr, px + rr, py + rr), fill=255 * fill)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(classname: str, rng: np.random.Generator, size: int = 32) -> tuple[Image.Image, dict]:
    """Draw one image of ``classname`` with randomness from ``rng``.

    The random draws do not depend on the class, so the same ``rng`` state gives the same size,
    position, rotation, background and noise for every class.

    Returns the RGB image and the sampled attributes: ``size`` ("small"/"large"), ``position``
    (a key of ``POSITION_PHRASES``, e.g. "top left"), ``background`` ("plain"/"striped"),
    ``center`` ((x, y) in pixels), ``radius`` (pixels), ``rotation`` (degrees), ``rgb`` (the
    jittered shape colour) and ``alpha`` (the shape's coverage, float32 array (size, size)).
    """
    ci, si = _parse(classname)
    u = rng.random(12)
    size_kind = SIZES[int(u[0] < 0.5)]  # u<0.5 -> large
    frac = 0.17 + 0.05 * u[1] if size_kind == "small" else 0.29 + 0.07 * u[1]
    radius = frac * size
    rotation = -15.0 + 30.0 * u[2]
    margin = radius * 1.08 + 0.5
    cx = margin + (size - 2 * margin) * u[3]
    cy = margin + (size - 2 * margin) * u[4]

    # Background: a dark, desaturated tint, sometimes with low-contrast stripes.
    bg = np.array(colorsys.hsv_to_rgb(u[5], 0.05 + 0.3 * u[6], 0.12 + 0.26 * u[7]), dtype=np.float32) * 255
    image = np.broadcast_to(bg, (size, size, 3)).astype(np.float32)
    striped = u[8] < STRIPE_PROB
    stripe = rng.random(3)
    if striped:
        gx, gy = _grid(size)
        theta = np.pi * np.floor(stripe[0] * 4) / 4  # horizontal, vertical or diagonal
        period = 3.0 + 5.0 * stripe[1]
        phase = np.floor((gx * np.cos(theta) + gy * np.sin(theta)) / (period / 2)) % 2
        contrast = (0.15 + 0.2 * stripe[2]) * 255 * (1 if bg.mean() < 60 else -1) * 0.5
        image = image + phase[..., None] * contrast

    # The shape, with colour jitter.
    jitter = rng.normal(0.0, 12.0, 3)
    rgb = np.clip(np.array(COLOUR_RGB[COLOURS[ci]], dtype=np.float32) * (0.85 + 0.2 * u[9]) + jitter, 0, 255)
    alpha = _mask(SHAPES[si], cx, cy, radius, np.deg2rad(rotation), size)
    image = image * (1 - alpha[..., None]) + rgb * alpha[..., None]

    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * (3.0 + 7.0 * u[10])
    pixels = np.clip(image + noise, 0, 255).astype(np.uint8)
    attrs = {
        "size": size_kind,
        "position": _position_key(cx, cy, size),
        "background": BACKGROUNDS[int(striped)],
        "center": (float(cx), float(cy)),
        "radius": float(radius),
        "rotation": float(rotation),
        "rgb": tuple(int(v) for v in rgb.round()),
        "alpha": alpha,
    }
    return Image.fromarray(pixels, "RGB"), attrs


def caption(classname: str, attrs: dict, rng: np.random.Generator) -> str:
    """A caption for an image of ``classname`` with attributes ``attrs`` (from ``render``).

    The class name always appears verbatim; a size word may precede it and position and
    background phrases may follow it; sometimes 1-12 filler words are put in front.
    """
    ci, si = _parse(classname)
    name = f"{COLOURS[ci]} {SHAPES[si]}"
    u = rng.random(4)
    template = TEMPLATES[int(rng.choice(len(TEMPLATES), p=_TEMPLATE_P))]
    phrase = f"{attrs['size']} {name}" if u[0] < _SIZE_WORD_PROB else name
    if u[1] < _POSITION_PROB:
        phrase += " " + POSITION_PHRASES[attrs["position"]]
    if u[2] < _BACKGROUND_PROB:
        phrase += f" on a {attrs['background']} background"
    text = template.format(phrase)
    if u[3] < _FILLER_PROB:
        k = int(rng.integers(1, MAX_FILLER + 1))
        text = " ".join(FILLER_WORDS[i] for i in rng.integers(0, len(FILLER_WORDS), k)) + " " + text
    return text


def sample(
    n: int, seed: int, classes: list[str] | None = None, size: int = 32
) -> Iterator[tuple[Image.Image, str, str]]:
    """``n`` (image, caption, class name) triples, deterministic in ``seed``.

    Classes are drawn uniformly from ``classes``; the default is ``seen_classes()`` (the 70
    pretraining classes; pass ``class_names()`` for all 100).
    """
    pool = seen_classes() if classes is None else list(classes)
    for c in pool:
        _parse(c)
    if not pool:
        raise ValueError("sample() needs at least one class")
    rng = np.random.default_rng(seed)
    for _ in range(n):
        classname = pool[int(rng.integers(len(pool)))]
        image, attrs = render(classname, rng, size)
        yield image, caption(classname, attrs, rng), classname
