"""Small-sample tests and family-wise control behind `mtaudit regress` verdicts.

Why these tests:
- The run is the unit.  Rows with a run that found nothing (zeros, rare detectors, console
  problems) use an exact permutation test of per-run values: with ties and zeros nothing
  else holds its level at 3 or 5 runs.  It enumerates every split up to CAP_SPLITS splits
  (8+8 runs: 12,870) and beyond that draws RESAMPLES random splits from a fixed seed, so 10+10
  or 20+20 runs cost milliseconds and the same input always gives the same p.
- Rows where every run on both sides fired are compared with Welch's t-test on log rates.  A
  permutation test cannot go below p = 0.1 at 3+3 runs, so it could never show a doubled rate;
  the t-test can, and the log scale with a Poisson floor on the variance (a run's log count
  varies at least 1/mean) keeps it honest for counts from a few to millions.
- The gate is one-sided: only "more findings on the candidate" fails CI, so each gating row
  gives a one-sided p for an increase, and the family of gating rows (every detector and the
  console check of one comparison) is adjusted with Benjamini-Hochberg
  (`scipy.stats.false_discovery_control`).  When no row truly changed (identical kernels) BH
  is Simes' test, so the chance that any row fails CI is at most alpha.  Rows whose smallest
  reachable p (given the pooled runs) cannot pass are not counted in the family (Tarone's
  rule for discrete tests): all-zero rows and 3+3 permutation rows do not dilute the others.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

CAP_SPLITS = 20_000     # enumerate every split up to this many (8+8 runs: 12,870)
RESAMPLES = 9_999       # beyond: this many random splits...
SEED = 19_2026          # ...drawn from this fixed seed (deterministic verdicts)
MAX_RUNS_NEEDED = 50    # "need N runs" is not printed beyond this


@dataclass(frozen=True)
class Split:
    """Candidate-side membership of every split considered, and whether that is all of them."""
    mask: np.ndarray    # (S, n) float 0/1: 1 = the run goes to the candidate side
    exact: bool


@functools.lru_cache(maxsize=64)
def splits(n_b: int, n_c: int) -> Split:
    """All ways to pick the candidate's n_c runs out of n_b + n_c, or a seeded sample of them."""
    n = n_b + n_c
    total = math.comb(n, n_c)
    if total <= CAP_SPLITS:
        idx = np.array(list(itertools.combinations(range(n), n_c)), dtype=np.intp).reshape(total, n_c)
        exact = True
    else:
        rng = np.random.default_rng(SEED + 1000 * n_b + n_c)
        idx = np.argsort(rng.random((RESAMPLES, n)), axis=1)[:, :n_c]
        exact = False
    mask = np.zeros((idx.shape[0], n))
    np.put_along_axis(mask, idx, 1.0, axis=1)
    mask.setflags(write=False)
    return Split(mask, exact)


@dataclass(frozen=True)
class PermResult:
    p_up: float         # one-sided: candidate mean this high or higher by chance
    p_down: float       # one-sided: candidate mean this low or lower
    p_two: float        # two-sided: 2 x the smaller one-sided p, capped at 1 (scipy's convention)
    pmin_up: float      # smallest p_up these pooled values could give (over every split)
    pmin_down: float
    exact: bool
    n_splits: int


def permutation(b: list[float], c: list[float]) -> PermResult:
    """Permutation test of the difference of per-run means (candidate - baseline)."""
    nb, nc = len(b), len(c)
    if nb < 1 or nc < 1:
        raise ValueError("permutation test needs runs on both sides")
    v = np.asarray(list(b) + list(c), dtype=float)
    sp = splits(nb, nc)
    sums = sp.mask @ v                    # candidate sum: monotone in the difference of means
    obs = float(v[nb:].sum())
    tol = 1e-9 * max(1.0, float(np.abs(v).sum()))
    ge = int(np.count_nonzero(sums >= obs - tol))
    le = int(np.count_nonzero(sums <= obs + tol))
    top, bottom = float(sums.max()), float(sums.min())
    ge_min = int(np.count_nonzero(sums >= top - tol))
    le_min = int(np.count_nonzero(sums <= bottom + tol))
    s = sums.shape[0]
    if sp.exact:
        # every split is counted, the observed one among them
        p_up, p_down, pu_min, pd_min = ge / s, le / s, ge_min / s, le_min / s
    else:
        # the observed split is added to the random ones: p = (1 + hits) / (1 + draws)
        p_up, p_down = (1 + ge) / (1 + s), (1 + le) / (1 + s)
        pu_min, pd_min = 1 / (1 + s), 1 / (1 + s)
    return PermResult(p_up=min(1.0, p_up), p_down=min(1.0, p_down),
                      p_two=min(1.0, 2 * min(p_up, p_down)), pmin_up=min(1.0, pu_min),
                      pmin_down=min(1.0, pd_min), exact=sp.exact, n_splits=s)


def mannwhitney(b: list[float], c: list[float]) -> float:
    """Two-sided Mann-Whitney U by the same permutation (tie-safe: all-equal samples give 1)."""
    from scipy.stats import rankdata
    r = rankdata(list(b) + list(c))
    return permutation(list(r[:len(b)]), list(r[len(b):])).p_two


def welch_log(b_rates: list[float], c_rates: list[float], b_counts: list[float],
              c_counts: list[float]) -> tuple[float, float, float]:
    """(p_up, p_down, p_two) of Welch's t-test on log rates; every value must be > 0.

    Per side the variance of the log rate is at least 1/mean count (Poisson): a run that
    counted 200 cannot vary by less than that, so identical copies of one bundle do not
    look infinitely precise."""
    from scipy.stats import t as tdist
    lb, lc = np.log(np.asarray(b_rates, float)), np.log(np.asarray(c_rates, float))
    nb, nc = len(lb), len(lc)
    vb = max(float(np.var(lb, ddof=1)), 1.0 / float(np.mean(b_counts)))
    vc = max(float(np.var(lc, ddof=1)), 1.0 / float(np.mean(c_counts)))
    sb, sc = vb / nb, vc / nc
    se = math.sqrt(sb + sc)
    df = (sb + sc) ** 2 / (sb ** 2 / (nb - 1) + sc ** 2 / (nc - 1))
    t = (float(np.mean(lc)) - float(np.mean(lb))) / se
    up, down = float(tdist.sf(t, df)), float(tdist.cdf(t, df))
    return up, down, min(1.0, 2 * min(up, down))


def fisher(fired_b: int, n_b: int, fired_c: int, n_c: int) -> float:
    """Two-sided Fisher exact test on runs with findings (0-day's fail:runs as a p-value)."""
    from scipy.stats import fisher_exact
    return float(fisher_exact([[fired_b, n_b - fired_b], [fired_c, n_c - fired_c]]).pvalue)


# ---------------------------------------------------------------------------------------------
# the family of one comparison

def tarone_k(pmins: list[float], alpha: float) -> int:
    """Smallest K such that at most K rows can reach alpha/K (0 when no row has a p)."""
    m = len(pmins)
    for k in range(1, m + 1):
        if sum(1 for x in pmins if x <= alpha / k) <= k:
            return k
    return m


def adjust(ps: list[float | None], pmins: list[float | None], alpha: float) -> tuple[list[float | None], int]:
    """Benjamini-Hochberg adjusted p per row (None: the row cannot reach alpha in this family),
    and the family size K the adjustment used.

    Rows whose pooled runs cannot give p <= alpha/K are left out (Tarone); the rest are
    adjusted by scipy.stats.false_discovery_control as a family of K rows."""
    from scipy.stats import false_discovery_control
    live = [i for i, p in enumerate(ps) if p is not None and pmins[i] is not None]
    k = tarone_k([float(pmins[i]) for i in live], alpha)
    out: list[float | None] = [None] * len(ps)
    if k == 0:
        return out, 0
    keep = [i for i in live if float(pmins[i]) <= alpha / k]
    if not keep:
        return out, k
    vec = [float(ps[i]) for i in keep] + [1.0] * (k - len(keep))
    adj = false_discovery_control(np.asarray(vec), method="bh")
    for j, i in enumerate(keep):
        out[i] = float(adj[j])
    return out, k


def runs_for_pattern(alpha: float, k: int) -> int | None:
    """Runs per side for 'fired in every run of one side, never on the other' to reach a
    one-sided exact p <= alpha/k (p = 1 / C(2n, n) for that split)."""
    level = alpha / max(1, k)
    for n in range(2, MAX_RUNS_NEEDED + 1):
        if 1.0 / math.comb(2 * n, n) <= level:
            return n
    return None


def min_split_p(n_b: int, n_c: int) -> float:
    """One-sided exact p of the most extreme split: 1 / C(n_b + n_c, n_c)."""
    return 1.0 / math.comb(n_b + n_c, n_c)
