"""Per-subject looks of a synthetic face: colours (RGB), hair style, glasses. Fixed per subject like identity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Appearance", "HAIR_STYLES"]

_SKIN = np.array([[238, 206, 182], [226, 184, 154], [205, 157, 120], [180, 128, 92], [150, 102, 70],
                  [115, 78, 55], [85, 58, 42]], dtype=np.float64)
_HAIR = np.array([[22, 18, 16], [55, 38, 27], [98, 66, 42], [150, 110, 70], [205, 172, 115], [135, 62, 36],
                  [165, 162, 158], [215, 210, 202]], dtype=np.float64)
_HAIR_P = np.array([0.28, 0.24, 0.16, 0.08, 0.1, 0.05, 0.06, 0.03])
_IRIS = np.array([[92, 58, 32], [52, 36, 26], [80, 112, 150], [92, 112, 72], [122, 92, 52]], dtype=np.float64)
HAIR_STYLES = ("short", "medium", "long", "bald")


def _jitter(rng: np.random.Generator, colour: np.ndarray, spread: float) -> tuple[int, int, int]:
    c = np.clip(colour + rng.normal(0.0, spread, 3), 0, 255)
    return tuple(int(round(v)) for v in c)


@dataclass(frozen=True)
class Appearance:
    """Colours are RGB tuples; sizes are in face widths."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    fringe: bool
    brow: tuple[int, int, int]
    brow_thickness: float
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    clothes: tuple[int, int, int]
    stubble: bool
    glasses: bool

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Appearance":
        t = rng.uniform(0, len(_SKIN) - 1)
        i = min(int(t), len(_SKIN) - 2)
        skin_base = _SKIN[i] + (_SKIN[i + 1] - _SKIN[i]) * (t - i)
        skin = _jitter(rng, skin_base, 6.0)
        hair_base = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)]
        hair = _jitter(rng, hair_base, 8.0)
        style = str(rng.choice(HAIR_STYLES, p=[0.35, 0.25, 0.33, 0.07]))
        brow = _jitter(rng, np.minimum(hair_base, skin_base) * rng.uniform(0.35, 0.6), 5.0)
        lips_base = skin_base * np.array([0.86, 0.58, 0.6]) + np.array([22, 8, 10])
        if rng.random() < 0.2:
            lips_base = np.array([175, 45, 60]) * 0.6 + lips_base * 0.4
        clothes_base = rng.integers(0, 256, 3).astype(np.float64)
        clothes = _jitter(rng, clothes_base.mean() + (clothes_base - clothes_base.mean()) * rng.uniform(0.1, 0.9), 0)
        return cls(skin=skin, hair=hair, hair_style=style, fringe=bool(rng.random() < 0.35 and style != "bald"),
                   brow=brow, brow_thickness=float(rng.uniform(0.022, 0.04)),
                   iris=_jitter(rng, _IRIS[rng.integers(len(_IRIS))], 8.0), lips=_jitter(rng, lips_base, 6.0),
                   clothes=clothes, stubble=bool(rng.random() < 0.15), glasses=bool(rng.random() < 0.1))
