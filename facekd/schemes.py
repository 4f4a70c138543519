"""Landmark schemes: point counts, left/right flip permutations and the points metrics normalise by.

"Left" and "right" are the subject's own: in a frontal photo the subject's right eye is on the image's
left. After a horizontal image flip, point ``i`` of the flipped face is point ``flip_permutation[i]`` of
the original (mirrored). Pairs of tuples (``outer_eye_corners``, ``pupils``) list the subject's right
side first. Indices are 0-based.

The tables follow the usual definitions (iBUG 300-W 68 points, WFLW 98 points, COFW 29 points) and agree
with the flip tables of HRNet-Facial-Landmark-Detection (``MATCHED_PARTS``) and mmpose's dataset infos.

Example:
    >>> scheme = get_scheme(98)
    >>> scheme.flip_permutation[60], scheme.outer_eye_corners
    (72, (60, 72))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LandmarkScheme", "SCHEMES", "get_scheme"]


@dataclass(frozen=True)
class LandmarkScheme:
    """One landmark layout.

    Attributes:
        name: short name (``ibug68``, ``wflw98``, ``cofw29``).
        n_points: number of landmarks K.
        flip_permutation: point ``i`` of a mirrored face is point ``flip_permutation[i]`` of the original.
        outer_eye_corners: (subject's right, subject's left) outer eye corners; NME's inter-ocular distance.
        pupils: (subject's right, subject's left) pupil, each the mean of the listed points.
        groups: named index groups (``left_eye``, ``right_brow``, ...; subject's sides).
    """

    name: str
    n_points: int
    flip_permutation: tuple[int, ...]
    outer_eye_corners: tuple[int, int]
    pupils: tuple[tuple[int, ...], tuple[int, ...]]  # each pupil = mean of these points
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        permutation = self.flip_permutation
        if sorted(permutation) != list(range(self.n_points)):
            raise ValueError(f"{self.name}: flip_permutation is not a permutation of range({self.n_points})")
        broken = [i for i, j in enumerate(permutation) if permutation[j] != i]
        if broken:
            raise ValueError(f"{self.name}: flip_permutation is not an involution at points {broken}")
        used = [*self.outer_eye_corners, *self.pupils[0], *self.pupils[1]]
        used += [i for members in self.groups.values() for i in members]
        outside = sorted({i for i in used if not 0 <= i < self.n_points})
        if outside:
            raise ValueError(f"{self.name}: indices {outside} outside range({self.n_points})")


def _pairs_to_permutation(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    permutation = list(range(n))
    seen: set[int] = set()
    for a, b in pairs:
        if a in seen or b in seen:
            raise ValueError(f"point listed in two flip pairs: {(a, b)}")
        seen.update((a, b))
        permutation[a], permutation[b] = b, a
    return tuple(permutation)


def _span(start: int, stop: int) -> tuple[int, ...]:
    return tuple(range(start, stop))


_IBUG68_PAIRS = (
    [(i, 16 - i) for i in range(8)]                        # jaw
    + [(17 + i, 26 - i) for i in range(5)]                 # brows
    + [(31, 35), (32, 34)]                                 # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    + [(60, 64), (61, 63), (65, 67)]                       # inner lips
)

_WFLW98_PAIRS = (
    [(i, 32 - i) for i in range(16)]                       # contour 0-32, 16 is the chin
    + [(33 + i, 46 - i) for i in range(5)]                 # upper brows 33-37 / 42-46
    + [(38 + i, 50 - i) for i in range(4)]                 # lower brows 38-41 / 47-50
    + [(55, 59), (56, 58)]                                 # nostrils (bridge 51-54 and 57 central)
    + [(60 + i, 72 - i) for i in range(5)]                 # eyes: corners and upper lids
    + [(65 + i, 75 - i) for i in range(3)]                 # lower lids
    + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]   # outer lips (79, 85 central)
    + [(88, 92), (89, 91), (93, 95)]                       # inner lips (90, 94 central)
    + [(96, 97)]                                           # pupils
)

# COFW: 0-7 brows (0/1 outer, 2/3 inner, 4/6 top, 5/7 bottom), 8/9 outer and 10/11 inner eye corners,
# 12/14 upper and 13/15 lower lids, 16/17 pupils, 18/19 nose wings, 20 nose tip, 21 under the nose,
# 22/23 mouth corners, 24-27 lip midline, 28 chin. Even indices of each pair are the subject's right.
_COFW29_PAIRS = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19),
                 (22, 23)]

SCHEMES: dict[int, LandmarkScheme] = {
    68: LandmarkScheme(
        "ibug68", 68, _pairs_to_permutation(68, _IBUG68_PAIRS), (36, 45),
        (_span(36, 42), _span(42, 48)),
        {"jaw": _span(0, 17), "right_brow": _span(17, 22), "left_brow": _span(22, 27), "nose": _span(27, 36),
         "right_eye": _span(36, 42), "left_eye": _span(42, 48), "mouth": _span(48, 68)},
    ),
    98: LandmarkScheme(
        "wflw98", 98, _pairs_to_permutation(98, _WFLW98_PAIRS), (60, 72), ((96,), (97,)),
        {"jaw": _span(0, 33), "right_brow": _span(33, 42), "left_brow": _span(42, 51), "nose": _span(51, 60),
         "right_eye": _span(60, 68), "left_eye": _span(68, 76), "mouth": _span(76, 96),
         "right_pupil": (96,), "left_pupil": (97,)},
    ),
    29: LandmarkScheme(
        "cofw29", 29, _pairs_to_permutation(29, _COFW29_PAIRS), (8, 9), ((16,), (17,)),
        {"right_brow": (0, 2, 4, 5), "left_brow": (1, 3, 6, 7), "right_eye": (8, 10, 12, 13, 16),
         "left_eye": (9, 11, 14, 15, 17), "nose": _span(18, 22), "mouth": _span(22, 28), "chin": (28,),
         "right_pupil": (16,), "left_pupil": (17,)},
    ),
}


def get_scheme(n_points: int) -> LandmarkScheme:
    """The scheme with ``n_points`` landmarks (68, 98 or 29)."""
    try:
        return SCHEMES[n_points]
    except KeyError:
        raise ValueError(f"no landmark scheme with {n_points} points (known: {sorted(SCHEMES)})") from None
