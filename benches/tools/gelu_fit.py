"""Fits the rational form of GELU that runtime/src/math.rs keeps as GELU_P / GELU_Q.

    gelu(x) = x / 2 + x * w,   w = xc * P(xc^2) / Q(xc^2) ~ Phi(x) - 1/2,
    xc = x clamped to [-C, C]

P has 7 coefficients, Q 5 (Q[0] = 1), C = 5.6. The fit is Lawson's iteration toward
the minimax: weighted linear least squares on `x P(s) - g Q(s)` (s = x^2, g = Phi(x) - 1/2),
each round's weights multiplied by its error, the error weighted by min(1, |x|) as the
test's bound `2e-7 * max(1, |x|)` on GELU asks. Then the coefficients are rounded to f32
and the f32 evaluation with fused multiply-adds (as on AVX-512) is checked against f64.

    python3 benches/tools/gelu_fit.py     (needs numpy; a few seconds)
"""
import math

import numpy as np

N_P, N_Q, CLAMP = 7, 5, 5.6


def phi_minus_half(x):
    return 0.5 * math.erf(x / math.sqrt(2.0))


def fit(rounds=400):
    xs = np.unique(np.concatenate([
        np.linspace(0.0, CLAMP, 6000)[1:],
        CLAMP * np.cos(np.linspace(0.0, np.pi / 2, 6000))[:-1],
    ]))
    g = np.array([phi_minus_half(x) for x in xs])
    v = (xs / CLAMP) ** 2  # s scaled to [0, 1] for a well-conditioned system
    shape = np.minimum(xs, 1.0)
    weights, q_before, best = np.ones_like(xs), np.ones_like(xs), None
    for _ in range(rounds):
        a = np.hstack([xs[:, None] * v[:, None] ** np.arange(N_P),
                       -(g[:, None] * v[:, None] ** np.arange(1, N_Q))])
        row = np.sqrt(weights) * shape / np.abs(q_before)
        sol, *_ = np.linalg.lstsq(a * row[:, None], g * row, rcond=None)
        p, q = sol[:N_P], np.concatenate([[1.0], sol[N_P:]])
        q_v = np.polyval(q[::-1], v)
        err = (xs * np.polyval(p[::-1], v) / q_v - g) * shape
        if best is None or np.max(np.abs(err)) < best[0]:
            best = (np.max(np.abs(err)), p.copy(), q.copy())
        weights = weights * np.abs(err)
        weights = weights / weights.sum() * len(weights) + 1e-12
        q_before = q_v
    worst, p, q = best
    unscale = np.array([CLAMP ** (-2 * k) for k in range(N_P)])
    return worst, p * unscale, q * unscale[:N_Q]


def gelu_f32(p, q, x):
    f = np.float32
    fma = lambda a, b, c: f(np.float64(a) * np.float64(b) + np.float64(c))
    xc = f(min(max(x, -f(CLAMP)), f(CLAMP)))
    s = f(xc * xc)
    num, den = p[-1], q[-1]
    for c in reversed(p[:-1]):
        num = fma(num, s, c)
    for c in reversed(q[:-1]):
        den = fma(den, s, c)
    w = f(xc * f(num / den))
    return fma(x, w, f(f(0.5) * x))


def main():
    worst, p, q = fit()
    p32, q32 = [np.float32(c) for c in p], [np.float32(c) for c in q]
    print(f"f64: {worst:.3e} from Phi(x) - 1/2 (weighted by min(1, |x|))")
    print("GELU_P =", [str(c) for c in p32])
    print("GELU_Q =", [str(c) for c in q32])
    ratio = 0.0
    for x in np.linspace(-10.0, 10.0, 400001):
        x = np.float32(x)
        v = float(x)
        want = 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
        ratio = max(ratio, abs(float(gelu_f32(p32, q32, x)) - want) / (2e-7 * max(1.0, abs(v))))
    print(f"f32 with fused multiply-adds: {ratio:.3f} of the bound 2e-7 * max(1, |x|) at worst")


if __name__ == "__main__":
    main()
