"""Global alignment: all section transforms at once from many pair registrations, then
trajectory smoothing along z.

Every section is registered to its ``k`` nearest good neighbours on each side. A pair
``(i, j, M)`` says that section ``i`` at pixel ``p`` shows what section ``j`` shows at ``M p``,
so the transforms ``A`` (aligned pixel -> section pixel) should satisfy ``A_j = M A_i``. These
constraints are solved together by iteratively reweighted least squares (a Huber loss on each
pair's residual in pixels, times the pair's confidence), so one bad pair is outvoted by the
others instead of shifting every section after it, as it does in a chain.

Rigid and translation models are solved in their Lie-algebra parameters (rotation angles first,
linear over angle differences; then translations, linear once the rotations are known); the
affine model is linear in its six parameters per section and is solved directly over the
residuals of control points. All matrices are taken about the image centre.

:func:`smooth_trajectory` then separates what is jitter from what is shape: the transforms'
slow part along z (a Gaussian-weighted local linear fit over ``sigma`` sections) is the
tissue's own shape plus any slowly accumulated error, and is kept out of the correction; only
the fast part (cutting and mounting jitter) is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairConstraint:
    """One registered pair: section ``i``'s pixel p corresponds to section ``j``'s ``matrix @ p``.

    ``weight`` is the pair's confidence (0 drops it); ``ncc`` its similarity after registration.
    """

    i: int
    j: int
    matrix: np.ndarray
    weight: float = 1.0
    ncc: float = float("nan")


@dataclass(frozen=True)
class SolveResult:
    """Absolute transforms (aligned pixel -> section pixel) and, for every pair given, its
    residual in pixels and final weight (confidence x robust weight; 0 when dropped)."""

    matrices: list[np.ndarray]
    residual_px: np.ndarray
    weights: np.ndarray


def _centre(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])


def _control_points(shape: tuple[int, int]) -> np.ndarray:
    """(3, 5) homogeneous points about the centre: the centre and four at a quarter size."""
    h, w = shape
    qx, qy = w / 4, h / 4
    pts = [(0, 0), (-qx, -qy), (qx, -qy), (-qx, qy), (qx, qy)]
    return np.array([[x, y, 1.0] for x, y in pts]).T


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    r = np.abs(r)
    return np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-12))


def _solve_weighted(rows, cols, vals, rhs, w, n_unknowns, fixed: dict[int, float]):
    """Weighted linear least squares ``min sum w (a x - b)^2`` with some unknowns fixed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import lsqr

    rows, cols, vals = np.asarray(rows), np.asarray(cols), np.asarray(vals, float)
    rhs = np.asarray(rhs, float).copy()
    sw = np.sqrt(np.asarray(w, float))
    free = np.ones(n_unknowns, bool)
    x_fixed = np.zeros(n_unknowns)
    for k, v in fixed.items():
        free[k] = False
        x_fixed[k] = v
    keep = free[cols]
    # move fixed unknowns to the right-hand side
    np.subtract.at(rhs, rows[~keep], vals[~keep] * x_fixed[cols[~keep]])
    index = -np.ones(n_unknowns, int)
    index[free] = np.arange(free.sum())
    a = coo_matrix(
        (vals[keep] * sw[rows[keep]], (rows[keep], index[cols[keep]])),
        shape=(len(rhs), int(free.sum())),
    ).tocsr()
    x = lsqr(a, rhs * sw, atol=1e-12, btol=1e-12, iter_lim=20 * n_unknowns + 200)[0]
    out = x_fixed.copy()
    out[free] = x
    return out


def solve_transforms(
    n: int,
    pairs: list[PairConstraint],
    shape: tuple[int, int],
    *,
    model: str = "rigid",
    reference: int = 0,
    delta_px: float = 1.5,
    iterations: int = 25,
) -> SolveResult:
    """Solve every section's transform from pair constraints (robust least squares).

    Parameters
    ----------
    n
        Number of sections.
    pairs
        Pair constraints; sections in no pair (blank, failed) get the transform of the nearest
        section that has one.
    shape
        (h, w) of the images the matrices refer to.
    model
        ``translation``, ``rigid`` or ``affine`` (``elastic`` solves its affine part).
    reference
        The section whose transform is the identity (the gauge).
    delta_px
        Huber threshold: pairs whose residual (mean over control points) exceeds it are
        weighted down in proportion.
    iterations
        Reweighting rounds.
    """
    c = _centre(shape)
    ci = np.linalg.inv(c)
    given = list(pairs)
    active = [k for k, p in enumerate(given) if p.weight > 0 and p.i != p.j]
    pairs = [given[k] for k in active]
    connected = _connected(n, pairs, reference)
    if reference not in connected:
        connected = {reference}
    m_c = [ci @ np.asarray(p.matrix, float) @ c for p in pairs]
    conf = np.array([p.weight for p in pairs], float)
    robust = np.ones(len(pairs))
    a = [np.eye(3) for _ in range(n)]
    q = _control_points(shape)
    resid = np.zeros(len(pairs))
    for it in range(max(1, iterations)):
        w = conf * robust
        if model == "affine" or model == "elastic":
            a = _solve_affine(n, pairs, m_c, w, q, reference)
        else:
            a = _solve_rigid(n, pairs, m_c, w, reference, model == "translation", q)
        resid = np.array(
            [
                np.linalg.norm((a[p.j] @ q - m @ a[p.i] @ q)[:2], axis=0).mean()
                for p, m in zip(pairs, m_c, strict=True)
            ]
        )
        if not len(pairs):
            new = robust
        elif it < iterations - 5:
            # Huber with a small threshold: close to least absolute deviations, which a few
            # grossly wrong pairs cannot drag far (a plain least-squares start would be)
            new = _huber(resid, delta_px)
        else:
            # then redescending (Cauchy), on a scale from the residuals themselves: a pair far
            # off (a wrong match) ends with almost no weight instead of a Huber share
            scale = max(delta_px, 1.4826 * float(np.median(resid)))
            new = 1.0 / (1.0 + (resid / (2.0 * scale)) ** 2)
        if it >= iterations - 5 and np.allclose(new, robust, atol=1e-3):
            robust = new
            break
        robust = new
    mats = [c @ a[i] @ ci for i in range(n)]
    # every given pair's residual (dropped ones too, for the report) and final weight
    all_resid = np.array(
        [
            np.linalg.norm(
                (a[p.j] @ q - ci @ np.asarray(p.matrix) @ c @ a[p.i] @ q)[:2], axis=0
            ).mean()
            for p in given
        ]
    )
    all_w = np.zeros(len(given))
    all_w[active] = conf * robust
    # sections outside the reference's connected part keep their nearest connected neighbour's
    if len(connected) < n:
        order = sorted(connected)
        for i in range(n):
            if i not in connected:
                k = min(order, key=lambda t: (abs(t - i), t))
                mats[i] = mats[k].copy()
    return SolveResult(mats, all_resid, all_w)


def _connected(n: int, pairs: list[PairConstraint], start: int) -> set[int]:
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for p in pairs:
        adj[p.i].add(p.j)
        adj[p.j].add(p.i)
    seen, todo = {start}, [start]
    while todo:
        k = todo.pop()
        for m in adj[k] - seen:
            seen.add(m)
            todo.append(m)
    return seen


def _solve_rigid(n, pairs, m_c, w, reference, translation_only, q):
    """Angles from angle differences, then translations (linear once the angles are known)."""
    r_px = float(np.abs(q[:2]).max()) or 1.0  # angles weighed as displacement at this radius
    if translation_only or not pairs:
        theta = np.zeros(n)
    else:
        # theta_j - theta_i = phi_ij; linearised about a chain estimate so wrapping is harmless
        phi = np.array([np.arctan2(m[1, 0], m[0, 0]) for m in m_c])
        theta0 = _chain_angles(n, pairs, phi, reference)
        rows, cols, vals, rhs = [], [], [], []
        for k, p in enumerate(pairs):
            d = theta0[p.j] - theta0[p.i]
            err = np.angle(np.exp(1j * (phi[k] - d)))
            rows += [k, k]
            cols += [p.j, p.i]
            vals += [1.0, -1.0]
            rhs.append(d + err)
        theta = _solve_weighted(rows, cols, vals, rhs, w * r_px**2, n, {reference: 0.0})
    rot = [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) for t in theta]
    # A_j = M A_i (about the centre): t_j - R_M t_i = m  (2 rows a pair)
    rows, cols, vals, rhs, ww = [], [], [], [], []
    for k, p in enumerate(pairs):
        rm = m_c[k][:2, :2] if not translation_only else np.eye(2)
        # keep the rotation part consistent with the solved angles
        if not translation_only:
            rm = rot[p.j] @ rot[p.i].T
        for r in range(2):
            row = 2 * k + r
            rows.append(row)
            cols.append(2 * p.j + r)
            vals.append(1.0)
            for s in range(2):
                rows.append(row)
                cols.append(2 * p.i + s)
                vals.append(-rm[r, s])
            rhs.append(m_c[k][r, 2])
            ww.append(w[k])
    if pairs:
        t = _solve_weighted(
            rows, cols, vals, rhs, ww, 2 * n, {2 * reference: 0.0, 2 * reference + 1: 0.0}
        ).reshape(n, 2)
    else:
        t = np.zeros((n, 2))
    out = []
    for i in range(n):
        m = np.eye(3)
        m[:2, :2] = rot[i]
        m[:2, 2] = t[i]
        out.append(m)
    return out


def _chain_angles(n, pairs, phi, reference):
    """A spanning-tree estimate of the angles (start of the linearisation)."""
    theta = np.zeros(n)
    known = {reference}
    changed = True
    while changed:
        changed = False
        for k, p in enumerate(pairs):
            if p.i in known and p.j not in known:
                theta[p.j] = theta[p.i] + phi[k]
                known.add(p.j)
                changed = True
            elif p.j in known and p.i not in known:
                theta[p.i] = theta[p.j] - phi[k]
                known.add(p.i)
                changed = True
    return theta


def _solve_affine(n, pairs, m_c, w, q, reference):
    """Six parameters a section, linear over control-point residuals of every pair."""
    rows, cols, vals, rhs, ww = [], [], [], [], []
    row = 0
    for k, p in enumerate(pairs):
        m = m_c[k]
        for pt in q.T:
            # (A_j pt)_r - sum_s M[r, s] (A_i pt)_s = M[r, 2]   (row 2 of A is [0, 0, 1])
            for r in range(2):
                for u in range(3):
                    rows.append(row)
                    cols.append(6 * p.j + 3 * r + u)
                    vals.append(pt[u])
                for s in range(2):
                    for u in range(3):
                        rows.append(row)
                        cols.append(6 * p.i + 3 * s + u)
                        vals.append(-m[r, s] * pt[u])
                rhs.append(m[r, 2])
                ww.append(w[k])
                row += 1
    fixed = {6 * reference + k: v for k, v in enumerate([1, 0, 0, 0, 1, 0])}
    x = _solve_weighted(rows, cols, vals, rhs, ww, 6 * n, fixed) if pairs else None
    out = []
    for i in range(n):
        m = np.eye(3)
        if x is not None:
            m[:2] = x[6 * i : 6 * i + 6].reshape(2, 3)
        out.append(m)
    return out


def smooth_trajectory(
    matrices: list[np.ndarray],
    shape: tuple[int, int],
    sigma: float,
    *,
    model: str = "rigid",
    keep: list[bool] | None = None,
) -> list[np.ndarray]:
    """Remove only the fast part of the transforms along z; keep the slow part (shape).

    The trajectory of the transforms (about the image centre: angle and shift, or the six
    affine parameters) is fitted at every section by a Gaussian-weighted local line over
    ``sigma`` sections (a local line, not a mean, so a steady turn or slope is kept to the ends
    of the stack). The result is ``A_i L_i^-1``: each section moved by its deviation from the
    slow trajectory ``L``. ``sigma <= 0`` returns the matrices unchanged.

    Assumes that what changes slowly along z (over more than ``sigma`` sections) is the
    tissue's shape and what changes from one section to the next is jitter; slow jitter
    (a whole run of sections shifted together) is taken for shape and kept.
    """
    n = len(matrices)
    if sigma <= 0 or n < 3:
        return [np.asarray(m, float).copy() for m in matrices]
    c = _centre(shape)
    ci = np.linalg.inv(c)
    mc = [ci @ np.asarray(m, float) @ c for m in matrices]
    if model in ("affine", "elastic"):
        params = np.array([m[:2].ravel() for m in mc])
    else:
        ang = np.unwrap([np.arctan2(m[1, 0], m[0, 0]) for m in mc])
        params = np.c_[ang, [m[0, 2] for m in mc], [m[1, 2] for m in mc]]
    use = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    if use.sum() < 2:
        use = np.ones(n, bool)
    z = np.arange(n, dtype=float)
    slow = np.empty_like(params)
    for i in range(n):
        wts = np.exp(-0.5 * ((z - i) / sigma) ** 2) * use
        sw = wts.sum()
        zm = (wts * z).sum() / sw
        pm = (wts[:, None] * params).sum(0) / sw
        var = (wts * (z - zm) ** 2).sum()
        if var > 1e-9:
            slope = (wts[:, None] * (z - zm)[:, None] * (params - pm)).sum(0) / var
        else:
            slope = np.zeros(params.shape[1])
        slow[i] = pm + slope * (i - zm)
    out = []
    for i in range(n):
        if params.shape[1] == 6:
            low = np.vstack([slow[i].reshape(2, 3), [0, 0, 1.0]])
        else:
            ca, sa = np.cos(slow[i, 0]), np.sin(slow[i, 0])
            low = np.array([[ca, -sa, slow[i, 1]], [sa, ca, slow[i, 2]], [0, 0, 1.0]])
        out.append(c @ (mc[i] @ np.linalg.inv(low)) @ ci)
    return out
