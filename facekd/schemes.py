"""Landmark schemes: point counts, left/right flip permutations and the points metrics normalise by.

"Left" and "right" are the subject's own; after a horizontal image flip, point ``i`` of the flipped face is
point ``flip_permutation[i]`` of the original (mirrored).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LandmarkScheme", "SCHEMES", "get_scheme"]


@dataclass(frozen=True)
class LandmarkScheme:
    name: str
    n_points: int
    flip_permutation: tuple[int, ...]
    outer_eye_corners: tuple[int, int]
    pupils: tuple[tuple[int, ...], tuple[int, ...]]  # each pupil = mean of these points


def _pairs_to_permutation(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    permutation = list(range(n))
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return tuple(permutation)


_IBUG68_PAIRS = (
    [(i, 16 - i) for i in range(8)]                        # jaw
    + [(17 + i, 26 - i) for i in range(5)]                 # brows
    + [(31, 35), (32, 34)]                                 # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    + [(60, 64), (61, 63), (65, 67)]                       # inner lips
)

SCHEMES: dict[int, LandmarkScheme] = {
    68: LandmarkScheme("ibug68", 68, _pairs_to_permutation(68, _IBUG68_PAIRS), (36, 45),
                       (tuple(range(36, 42)), tuple(range(42, 48)))),
}


def get_scheme(n_points: int) -> LandmarkScheme:
    try:
        return SCHEMES[n_points]
    except KeyError:
        raise ValueError(f"no landmark scheme with {n_points} points (known: {sorted(SCHEMES)})") from None
