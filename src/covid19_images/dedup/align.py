"""Confirm a candidate pair on aligned pixels: is one image a copy of (part of) the other?

A candidate comes with hypotheses of how image ``b``'s content maps onto image ``a``'s: from
keypoints that agree on one affine map (RANSAC), or from the two hashed views that matched (a
box onto a box). Each hypothesis is refined by OpenCV's ECC (correlation-maximising) alignment,
then the overlap is compared on its *fine detail*: each content minus its Gaussian blur
(sigma 1 px at 256 px), cut into 16 x 16 blocks; the score is the median correlation of the
blocks that carry detail (the more textured half).

Why this score: two films of one patient taken days apart, aligned as well as an affine map
allows, still differ at this scale (breathing, posture, noise, tubes), while a copy agrees
block by block whatever was done to its borders, size, encoding, brightness or gamma; text or a
marker burnt into a copy spoils only the few blocks it covers, and the median ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from covid19_images.process.signature import VIEWS, ZOOMS, Signature, opencv

BLOCK = 16
MIN_BLOCKS = 16
MIN_OVERLAP = 0.5
"""The overlap must cover at least this share of one of the two contents."""
MIN_INLIERS = 5
KEYPOINT_RADIUS = 7
"""Largest Hamming distance between two keypoint codes that counts as a match."""
PROMISING = 0.05
"""Score a hypothesis needs as it is to be refined (ECC, the costly step). A copy whose map
is rough (a crop matched by its centre views) scores 0.13 and above before refinement, in the
generated benchmark; 19 in 20 hypotheses between distinct films score under this."""


def view_region(signature: Signature, view: int, size: tuple[int, int]) -> np.ndarray:
    """Corners (x0, y0, x1, y1) of a hashed view in content pixels (``size`` = content w, h).

    Example:
        >>> s = Signature((0.25, 0.0, 0.75, 1.0), (0,) * 7, np.zeros(0, np.uint64),
        ...               np.zeros((0, 2), np.float32))
        >>> view_region(s, 0, (128, 256)).tolist(), view_region(s, 6, (128, 256)).tolist()
        ([-64.0, 0.0, 192.0, 256.0], [32.0, 64.0, 96.0, 192.0])
    """
    w, h = size
    if VIEWS[view] == "frame":
        left, top, right, bottom = signature.box
        sx, sy = w / max(right - left, 1e-6), h / max(bottom - top, 1e-6)
        return np.array([-left * sx, -top * sy, (1 - left) * sx, (1 - top) * sy]) + 0.0
    zoom = 1.0 if VIEWS[view] == "content" else ZOOMS[view - 2]
    mx, my = w * (1 - zoom) / 2, h * (1 - zoom) / 2
    return np.array([mx, my, w - mx, h - my])


def box_map(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 affine map (scale per axis, then shift) taking box ``src`` onto box ``dst``.

    Example:
        >>> box_map(np.array([0, 0, 10, 10]), np.array([5, 5, 25, 15])).tolist()
        [[2.0, 0.0, 5.0], [0.0, 1.0, 5.0]]
    """
    sx = (dst[2] - dst[0]) / max(src[2] - src[0], 1e-6)
    sy = (dst[3] - dst[1]) / max(src[3] - src[1], 1e-6)
    return np.array([[sx, 0.0, dst[0] - sx * src[0]], [0.0, sy, dst[1] - sy * src[1]]])


def keypoint_map(a: Signature, b: Signature, side_a: float, side_b: float) -> np.ndarray | None:
    """The affine map of ``b``'s content pixels onto ``a``'s that most keypoint matches agree on.

    ``side_a`` and ``side_b`` are the long sides of the two content images in pixels. Matches
    are mutual nearest codes within :data:`KEYPOINT_RADIUS` bits; the map needs at least
    :data:`MIN_INLIERS` of them within 4 px after RANSAC. None otherwise.
    """
    cv2 = opencv()

    if len(a.codes) < MIN_INLIERS or len(b.codes) < MIN_INLIERS:
        return None
    distance = np.bitwise_count(a.codes[:, None] ^ b.codes[None, :])
    best_b = distance.argmin(axis=1)
    best_a = distance.argmin(axis=0)
    mine = np.arange(len(a.codes))
    ok = (distance[mine, best_b] <= KEYPOINT_RADIUS) & (best_a[best_b] == mine)
    if ok.sum() < MIN_INLIERS:
        return None
    src = (b.points[best_b[ok]] * side_b).astype(np.float32)
    dst = (a.points[ok] * side_a).astype(np.float32)
    found, inliers = cv2.estimateAffine2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0, maxIters=1000, refineIters=10
    )
    if found is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    matrix = np.asarray(found, dtype=np.float64)
    return matrix if plausible(matrix) else None


def plausible(matrix: np.ndarray) -> bool:
    """Whether an affine map is one a copy can have undergone: a scale between 0.3 and 3.3 on
    each axis, axes no more than 1.6 times apart in scale, and no rotation or shear over ~6°.

    Example:
        >>> plausible(np.array([[0.5, 0.0, 10.0], [0.0, 0.6, 0.0]]))
        True
        >>> plausible(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]))  # a quarter turn
        False
    """
    sx = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    sy = float(np.hypot(matrix[0, 1], matrix[1, 1]))
    if not (0.3 <= sx <= 3.3 and 0.3 <= sy <= 3.3 and max(sx, sy) <= 1.6 * min(sx, sy)):
        return False
    return bool(abs(matrix[1, 0]) / sx <= 0.1 and abs(matrix[0, 1]) / sy <= 0.1)


def aligned_score(
    content_a: np.ndarray,
    content_b: np.ndarray,
    hypotheses: Sequence[np.ndarray],
    *,
    accept: float = 1.0,
    promising: float = PROMISING,
) -> tuple[float, float]:
    """The best block-median detail correlation over the hypotheses, and its overlap share.

    Each hypothesis is a 2 x 3 map of ``content_b``'s pixels onto ``content_a``'s. A score of
    1.0 is a perfect copy; distinct films score near 0 (see the module's text). The overlap
    share is the larger of the two contents' shares covered by the other. A hypothesis is
    refined (ECC) only when it scores at least ``promising`` as it is; the search stops at the
    first score of at least ``accept``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = (rng.random((128, 128)) * 255).astype(np.uint8)
        >>> shifted = np.ascontiguousarray(a[10:, 20:])
        >>> score, overlap = aligned_score(a, shifted, [np.array([[1., 0, 20], [0, 1, 10]])])
        >>> round(score, 2), overlap > 0.8
        (1.0, True)
        >>> other = (rng.random((128, 128)) * 255).astype(np.uint8)
        >>> aligned_score(a, other, [np.array([[1., 0, 0], [0, 1, 0]])])[0] < 0.2
        True
    """
    cv2 = opencv()

    a = content_a.astype(np.float32)
    b = content_b.astype(np.float32)
    best = (0.0, 0.0)
    fine: dict[int, np.ndarray] = {}  # each content's detail, made once for every hypothesis

    def both_ways(forward: np.ndarray) -> tuple[float, float]:
        # Scored on the coarser of the two grids: the finer image is shrunk onto it, never the
        # coarser one enlarged (an enlarged image has no fine detail left to agree on). Both
        # ways when the two grids are alike; the other way only measures the overlap.
        area = abs(float(np.linalg.det(forward[:, :2])))  # b's pixels, as a's
        in_a, overlap_a = _score(cv2, a, b, forward, detail=area <= 1.25, fine=fine)
        in_b, overlap_b = _score(
            cv2, b, a, cv2.invertAffineTransform(forward), detail=area >= 0.8, fine=fine
        )
        overlap = max(overlap_a, overlap_b)
        if overlap < MIN_OVERLAP:
            return (0.0, overlap)
        if area < 0.8:
            return (in_a, overlap)
        if area > 1.25:
            return (in_b, overlap)
        return (max(in_a, in_b), overlap)

    for hypothesis in hypotheses:
        found = both_ways(hypothesis.astype(np.float32))
        if found[0] < accept and found[0] >= promising:
            refined = _refined(cv2, a, b, hypothesis)
            if refined is not None:
                found = max(found, both_ways(refined))
        best = max(best, found)
        if best[0] >= accept:
            break
    return best


ECC_GATE = 0.85
"""Coarse ECC correlation below which a hypothesis is dropped before the full-size pass."""


def _refined(cv2: Any, a: np.ndarray, b: np.ndarray, forward: np.ndarray) -> np.ndarray | None:
    """ECC refinement of a b → a map (quarter size, then full size); None if it fails.

    ECC maximises the correlation of ``a`` with ``b`` warped onto it, over the part of ``a``
    that ``b`` covers. A hypothesis whose quarter-size correlation stays under
    :data:`ECC_GATE` is two different pictures: it is dropped without the costly full pass.
    """
    warp = cv2.invertAffineTransform(forward.astype(np.float32)).astype(np.float32)  # a → b
    steps = ((0.25, 40), (1.0, 10)) if min(a.shape) >= 128 and min(b.shape) >= 128 else ((1, 40),)
    for k, (scale, iterations) in enumerate(steps):
        if scale < 1:
            small_a = cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            small_b = cv2.resize(b, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        else:
            small_a, small_b = a, b
        guess = warp.copy()
        guess[:, 2] *= scale
        try:
            correlation, guess = cv2.findTransformECC(
                small_a,
                small_b,
                guess,
                cv2.MOTION_AFFINE,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4),
                None,
                3 if scale == 1 else 1,
            )
        except cv2.error:
            return None
        guess[:, 2] /= scale
        warp = guess
        if k == 0 and len(steps) > 1 and correlation < ECC_GATE:
            return None
    refined: np.ndarray = cv2.invertAffineTransform(warp)
    return refined


def _detail(cv2: Any, image: np.ndarray) -> np.ndarray:
    out: np.ndarray = image - cv2.GaussianBlur(image, (7, 7), 1.0)
    return out


def _shrunk(cv2: Any, moving: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``moving`` area-averaged down to the scale ``matrix`` maps it to, and the matrix from it.

    A bilinear warp that shrinks samples the image without averaging it, and the fine detail
    compared afterwards would be aliasing.
    """
    fx = min(1.0, float(np.hypot(matrix[0, 0], matrix[1, 0])))
    fy = min(1.0, float(np.hypot(matrix[0, 1], matrix[1, 1])))
    if fx > 0.9 and fy > 0.9:
        return moving, matrix
    h, w = moving.shape
    size = (max(1, round(w * fx)), max(1, round(h * fy)))
    small = cv2.resize(moving, size, interpolation=cv2.INTER_AREA)
    kx, ky = size[0] / w, size[1] / h
    # A pixel centre x of the small image is (x + 0.5) / k - 0.5 in the original's pixels.
    back = np.array([[1 / kx, 0.0, 0.5 / kx - 0.5], [0.0, 1 / ky, 0.5 / ky - 0.5]])
    composed = matrix[:, :2].astype(np.float64) @ back[:, :2]
    shift = matrix[:, :2].astype(np.float64) @ back[:, 2] + matrix[:, 2]
    return small, np.hstack([composed, shift[:, None]]).astype(np.float32)


def _score(
    cv2: Any,
    ref: np.ndarray,
    moving: np.ndarray,
    matrix: np.ndarray,
    *,
    detail: bool = True,
    fine: dict[int, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Block-median detail correlation of ``moving`` warped onto ``ref``, and the share of
    ``ref`` it covers (the score is 0.0 without ``detail``: the overlap alone). ``fine`` keeps
    ``ref``'s detail between calls on the same arrays."""
    h, w = ref.shape
    moving, matrix = _shrunk(cv2, moving, matrix)
    inside = cv2.warpAffine(
        np.ones_like(moving), matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0
    )
    mask = cv2.erode((inside > 0.999).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    overlap = float(mask.mean())
    hb, wb = h // BLOCK, w // BLOCK
    if not detail or hb * wb < MIN_BLOCKS:
        return 0.0, overlap
    warped = cv2.warpAffine(moving, matrix, (w, h), flags=cv2.INTER_LINEAR)

    def blocks(x: np.ndarray) -> np.ndarray:
        cut = x[: hb * BLOCK, : wb * BLOCK].reshape(hb, BLOCK, wb, BLOCK)
        return cut.transpose(0, 2, 1, 3).reshape(hb * wb, BLOCK * BLOCK)

    full = blocks(mask.astype(np.float32)).min(axis=1) > 0.5
    if full.sum() < MIN_BLOCKS:
        return 0.0, overlap
    fine = {} if fine is None else fine
    if id(ref) not in fine:
        fine[id(ref)] = _detail(cv2, ref)
    p = blocks(fine[id(ref)])[full]
    q = blocks(_detail(cv2, warped))[full]
    p -= p.mean(axis=1, keepdims=True)
    q -= q.mean(axis=1, keepdims=True)
    ep, eq = (p * p).sum(axis=1), (q * q).sum(axis=1)
    correlation = (p * q).sum(axis=1) / np.sqrt(ep * eq + 1e-9)
    energy = np.minimum(ep, eq)
    textured = energy >= np.median(energy)
    return float(np.median(correlation[textured])), overlap
