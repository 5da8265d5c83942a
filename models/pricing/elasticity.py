"""Item x channel price response, partially pooled towards what its peers say.

Each series s (an item on a channel) answers a price `p` with

    log E[units] = log base + alpha_s - elasticity_s * g(x),   x = log(p / reference_price)
    g(x) = (exp(curvature * x) - 1) / curvature   (g(x) = x when curvature = 0)

where `base` is a base level that knows nothing of the series itself (the structural base of
`models.pricing.demand`: channel, category, season), `alpha_s` the series' level and
`elasticity_s` the price elasticity |d ln q / d ln p| at the reference price, the series'
latest price: the elasticity a decision about its current price needs. At price p the
elasticity is `elasticity_s * (p / reference_price) ** curvature`: 0 is constant elasticity
(log-log), 1 the semi-log shape, larger values demand that falls faster than exponentially.
The curvature is one number for the whole shop, chosen by the likelihood of the prior's fit
(`fit_price_response`): the semi-log shape unless another fits clearly better.

Partial pooling (empirical Bayes). A series' own data identify its elasticity only through its
own price changes: `information_s` = sum mu * (g - weighted mean of g)^2 less what its item's
season could explain as well, 0 for a series never repriced. Each item has its own season: an
annual harmonic (cos and sin of the period's day of year) of log demand around the base's,
shared by its channels and shrunk towards 0 by the spread of the items' harmonics
(`_season_variance`), so a price change that coincides with the item's own season (a rise as
its season turns up) is not read as price response; what the two cannot tell apart widens the
elasticity's interval. The prior mean of a series is the elasticity of its channel and
category, moved by its relative price and volume (`_covariates`), fitted on the likelihood of
every series at once (`_prior_fit`, each series with its own level): the series that inform on
their own are the busy ones, which are usually less elastic than the rest, so a prior learnt
from them alone would be too low for the thin series; the volume term carries the difference.
Its variance adds the between-series variance `tau2`: how far the own estimates of the series
stray from that mean beyond their noise, averaged over what the data leave uncertain about it
(`_between_series_variance`, over every series whose own estimate has an sd below about 3: the
thin series spread most). Part of it is shared by an item's channels, so one item's series are
fitted together (`_newton`) and what one channel's data say moves the others, counted once.
The posterior (a Laplace approximation at the mode) moves from the prior's mean to the series'
own estimate in proportion to the evidence: `evidence_share = information / (information +
1 / prior_variance)`. Elasticities are kept >= 0, so demand never rises with price.
"""

import dataclasses
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

CURVATURES = (0.0, 0.5, 1.0, 2.0, 3.0)
DEFAULT_CURVATURE = 1.0  # semi-log, kept unless another curvature fits clearly better:
LIKELIHOOD_RATIO_THRESHOLD = 1.92  # half the 95% quantile of chi-square(1)
MAX_ELASTICITY = 6.0  # elasticities are kept in [0, 6]: demand never rises with price, and an
# estimate beyond 6 (a price variation confounded with order size, say) is not believed
MAX_LOG_RATIO = float(np.log(3.0))  # prices beyond 3x or below 1/3 of the reference respond
# as at those bounds
LEVEL_PRIOR_SD = 3.0  # of a series' level around the base's (which knows nothing of the series)
MIN_TAU2 = 0.01  # series elasticities are never pooled tighter than +-0.1 around their prior
TAU2_QUANTILES = 40  # of tau2's confidence distribution, averaged
MAX_STANDARDIZED = 3.0  # a series' squared standardized deviation counts at most 9 in tau2
MIN_INFORMATION = 1.0  # series whose own estimate has an sd above 1 do not inform the spread
# of one item's channels (their unpooled estimates are mostly noise, some diverge)
MIN_TAU2_INFORMATION = 0.1  # tau2 takes series up to an sd of about 3: the thin series, which
# spread most, count in it, weighted by their noise
FLAT_PRIOR_VARIANCE = 1e4
FLAT_SEASON_VARIANCE = 1.0  # of an item's harmonic coefficients before their spread is known
MIN_SEASON_VARIANCE = 0.02**2  # items' seasons are never pooled tighter than +-0.02 of log
# demand around the base's
NEWTON_STEPS = 30
MAX_STEP = 1.0
MAX_EXPONENT = 30.0  # log-demand is clipped here so a wild step cannot overflow
MIN_PEARSON_MEAN = 0.5  # a sale where the fit expects ~0 does not make the whole shop noisy
SLOPE_PRIOR_SD = 1.0  # of the prior's slopes on a series' relative price and volume
PRIOR_START = 1.0  # the shop's elasticity before data: ridge centre of the prior's mean
SHOP_PRIOR_SD = 1.0  # ridge sd of the shop's mean elasticity around PRIOR_START
CHANNEL_PRIOR_SD = 0.5  # ridge sd of a channel's deviation from the shop's mean
CATEGORY_PRIOR_SD = 0.3  # ridge sd of a category's deviation from its channel's mean
VOLUME_FLOOR = 0.05  # units per period added before the log of a series' mean volume
MIN_RATIO = 1e-3  # price ratios are floored here before the log (a price of 0 stays finite)
UNSEEN = "*"  # the group and channel key of nothing seen in training
DAYS_PER_YEAR = 365.25


def price_ratio(price: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """price / reference, floored at `MIN_RATIO` (NaN where the reference is not positive)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(reference > 0, price / reference, np.nan)
    return np.maximum(ratio, MIN_RATIO)


def response_shape(x: np.ndarray, curvature: float) -> np.ndarray:
    """g(x): the log-demand drop per unit of elasticity at log price ratio `x` (clipped to
    +-`MAX_LOG_RATIO`: the response is not extrapolated further)."""
    x = np.clip(np.asarray(x, dtype=float), -MAX_LOG_RATIO, MAX_LOG_RATIO)
    if curvature == 0:
        return x
    return np.expm1(curvature * x) / curvature


@dataclass(frozen=True)
class _Posterior:
    elasticity: np.ndarray
    variance: np.ndarray  # of the elasticity, at the mode
    information: np.ndarray  # of the elasticity from the series' own data (nuisance profiled out)
    log_likelihood: float
    pearson: float  # sum of squared Pearson residuals (means floored at MIN_PEARSON_MEAN)


@dataclass(frozen=True)
class _Design:
    """The rows of a response fit: each row's series, units, log base level, response shape
    g(x) and annual angle, and each series' item and its slot among the item's series."""

    series: np.ndarray
    n: int
    units: np.ndarray
    offset: np.ndarray
    shape: np.ndarray
    angle: np.ndarray
    item_of: np.ndarray
    slot: np.ndarray

    @property
    def items(self) -> int:
        return int(self.item_of.max()) + 1 if self.n else 0

    @property
    def slots(self) -> int:
        return int(self.slot.max()) + 1 if self.n else 1


def annual_angle(ts: pd.Series) -> np.ndarray:
    """The day of year of each timestamp as an angle on the unit circle (radians)."""
    return 2 * np.pi * (ts.dt.dayofyear.to_numpy(dtype=float) - 1) / DAYS_PER_YEAR


def _newton(design: _Design, prior_mean: np.ndarray, prior_var: np.ndarray, nonnegative: bool,
            dispersion: float = 1.0, season_var: float = FLAT_SEASON_VARIANCE,
            shared_var: float = 0.0) -> tuple[_Posterior, np.ndarray]:
    """Posterior mode of every series' level and elasticity and of every item's seasonal
    deviation (an annual harmonic shared by its series, prior variance `season_var` per
    coefficient) at once, under the quasi-Poisson likelihood with `dispersion` (variance =
    dispersion x mean). The elasticities of one item's series share a deviation from their
    prior means of variance `shared_var` (`prior_var` is each one's own variance beside it),
    so each item is one joint fit and what its channels' data share is counted once. Also
    returns each item's harmonic (items x 4: the cos and sin coefficients, their variances)."""
    slots, items = design.slots, design.items
    width = 2 * slots + 2  # per item: its series' levels, their elasticities, cos, sin
    item, slot = design.item_of, design.slot
    elasticity_at = item * width + slots + slot
    row_item, row_slot = item[design.series], slot[design.series]
    # Each row's four parameters (its series' level and elasticity, its item's cos and sin)
    # as offsets within its item's block, and the row's value for each.
    local = np.column_stack([row_slot, slots + row_slot, np.full(len(row_slot), 2 * slots),
                             np.full(len(row_slot), 2 * slots + 1)])
    position = (row_item * width)[:, None] + local
    values = np.column_stack([np.ones(len(row_slot)), -design.shape, np.cos(design.angle),
                              np.sin(design.angle)])
    by_slot = [np.flatnonzero(row_slot == j) for j in range(slots)]
    diagonal = np.ones((items, width))
    diagonal[item, slot] = 1.0 / LEVEL_PRIOR_SD**2
    diagonal[:, 2 * slots:] = 1.0 / season_var
    precision = np.zeros((items, width, width))
    precision[:, np.arange(width), np.arange(width)] = diagonal
    present = np.zeros((items, slots))
    present[item, slot] = 1.0
    elasticity_prior = shared_var * present[:, :, None] * present[:, None, :]
    elasticity_prior[:, np.arange(slots), np.arange(slots)] += 1.0 - present
    elasticity_prior[item, slot, slot] += prior_var
    precision[:, slots:2 * slots, slots:2 * slots] = np.linalg.inv(elasticity_prior)
    season = np.arange(items)[:, None] * width + 2 * slots + np.arange(2)
    center = np.zeros(items * width)
    center[elasticity_at] = prior_mean
    beta = center.copy()
    if nonnegative:
        beta[elasticity_at] = np.clip(beta[elasticity_at], 0.0, MAX_ELASTICITY)

    def curvature_matrix(weight: np.ndarray) -> np.ndarray:
        hessian = precision.copy()
        for rows in by_slot:
            if not len(rows):
                continue
            at, owner = local[rows[0]], row_item[rows]
            for a in range(4):
                for b in range(a, 4):
                    total = np.bincount(owner, weight[rows] * values[rows, a] * values[rows, b],
                                        items)
                    hessian[:, at[a], at[b]] += total
                    if a != b:
                        hessian[:, at[b], at[a]] += total
        return hessian

    def mean(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = np.minimum(design.offset + np.einsum("rk,rk->r", values, beta[position]),
                         MAX_EXPONENT)
        return eta, np.exp(eta)

    for _ in range(NEWTON_STEPS):
        _, mu = mean(beta)
        residual = (design.units - mu) / dispersion
        gradient = (np.bincount(position.ravel(), (residual[:, None] * values).ravel(),
                                items * width)
                    - np.einsum("iab,ib->ia", precision, (beta - center).reshape(items, width)
                                ).ravel())
        hessian = curvature_matrix(mu / dispersion)
        step = np.linalg.solve(hessian, gradient.reshape(items, width, 1)).ravel()
        step = np.clip(step, -MAX_STEP, MAX_STEP)
        beta = beta + step
        if nonnegative:
            beta[elasticity_at] = np.clip(beta[elasticity_at], 0.0, MAX_ELASTICITY)
        if np.abs(step).max(initial=0) < 1e-7:
            break
    eta, mu = mean(beta)
    log_likelihood = float(np.sum(design.units * eta - mu))
    pearson = float(np.sum((design.units - mu) ** 2 / np.maximum(mu, MIN_PEARSON_MEAN)))
    # The elasticity's variance with everything else about its item unknown (its levels, the
    # other series' elasticities, the item's season), and so its own data's information.
    covariance = np.linalg.inv(curvature_matrix(mu / dispersion))
    variance = covariance[item, slots + slot, slots + slot]
    information = np.maximum(1.0 / variance - 1.0 / (prior_var + shared_var), 0.0)
    harmonic = np.column_stack([beta[season], covariance[:, 2 * slots, 2 * slots],
                                covariance[:, 2 * slots + 1, 2 * slots + 1]])
    return (_Posterior(beta[elasticity_at], variance, information, log_likelihood, pearson),
            harmonic)


def _random_effects(estimate: np.ndarray, variance: np.ndarray, group: np.ndarray, groups: int,
                    min_tau2: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
    """DerSimonian-Laird: per group, the random-effects mean of the estimates and its variance
    (NaN for a group without estimates), and the between-estimate variance tau2."""
    weight = 1.0 / variance
    total = np.bincount(group, weight, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        fixed_mean = np.bincount(group, weight * estimate, groups) / total
        q = float(np.sum(weight * (estimate - fixed_mean[group]) ** 2))
        c = float(weight.sum() - np.nansum(np.bincount(group, weight**2, groups) / total))
    df = len(estimate) - np.count_nonzero(total)
    tau2 = max(min_tau2, (q - df) / c if c > 0 else min_tau2)
    weight = 1.0 / (variance + tau2)
    total = np.bincount(group, weight, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(group, weight * estimate, groups) / total
        return mean, 1.0 / total, tau2


def _between_series_variance(deviation: np.ndarray, variance: np.ndarray,
                             leverage: np.ndarray) -> float:
    """tau2: how far the series' own estimates stray from the prior's mean (their
    `deviation`s, sampling `variance`s) beyond their sampling noise, with what a year of data
    leaves uncertain about it: the mean of its Q-profile confidence distribution. At the
    true tau2, Q(tau2) = sum(deviation^2 / (variance + tau2)) follows a chi-square with
    (series - leverage) degrees of freedom; each quantile of that chi-square gives the tau2
    where Q meets it (the Paule-Mandel estimate at the median), and tau2 is their mean. Each
    standardized deviation counts at most `MAX_STANDARDIZED`^2 (a diverged estimate of a thin
    series cannot decide it); the prior's fit takes `leverage` (each series' share of its
    own prior mean) of the degrees of freedom."""
    if len(deviation) == 0:
        return 0.0
    freedom = max(len(deviation) - float(np.sum(leverage)), 1.0)
    quantiles = _chi_square_quantiles(freedom, TAU2_QUANTILES)
    low, high = np.zeros(TAU2_QUANTILES), np.full(TAU2_QUANTILES, MAX_ELASTICITY**2)
    for _ in range(60):
        middle = (low + high) / 2
        q = np.minimum(deviation**2 / (variance + middle[:, None]),
                       MAX_STANDARDIZED**2).sum(axis=1)
        above = q > quantiles
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return float(np.mean((low + high) / 2))


def _chi_square_quantiles(freedom: float, count: int) -> np.ndarray:
    """`count` evenly spaced quantiles (at (j - 0.5) / count) of a chi-square with `freedom`
    degrees of freedom, by the Wilson-Hilferty approximation."""
    z = np.array([NormalDist().inv_cdf((j + 0.5) / count) for j in range(count)])
    scale = 2.0 / (9.0 * freedom)
    return freedom * np.maximum(1.0 - scale + z * np.sqrt(scale), 0.0) ** 3


@dataclass(frozen=True)
class PriceResponse:
    """The fitted price response: one row per series in `table` (item_id, channel, group,
    reference_price, elasticity, elasticity_sd, evidence_share, price_levels), the priors
    of series not seen in training (`_unseen_priors`), the shop-wide curvature and the
    overdispersion of unit counts (variance / mean, >= 1: how much less a unit sold says than
    a Poisson count would)."""

    table: pd.DataFrame
    priors: pd.DataFrame  # key ("channel|category", "channel" or UNSEEN) -> mean, variance
    curvature: float
    log_likelihood: float
    dispersion: float = 1.0

    def for_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row (item_id, channel, category, reference_price): the series' reference price,
        elasticity (at that price), elasticity_sd, evidence_share and price_levels; series
        unseen in training take their row's reference price and their group's prior (their
        channel's, the shop's when those are unseen too) with no evidence."""
        key = pd.MultiIndex.from_frame(rows[["item_id", "channel"]])
        found = self.table.set_index(["item_id", "channel"]).reindex(key).reset_index(drop=True)
        missing = found["elasticity"].isna().to_numpy()
        if missing.any():
            prior = self.priors.set_index("key")
            keys = [group_key(c, g) for c, g in zip(rows["channel"], _categories(rows),
                                                    strict=True)]
            channels = rows["channel"].astype(str).to_numpy()
            mean, var = [], []
            for group, channel in zip(np.asarray(keys)[missing], channels[missing], strict=True):
                chosen = next(k for k in (group, channel, UNSEEN) if k in prior.index)
                mean.append(prior.at[chosen, "mean"])
                var.append(prior.at[chosen, "variance"])
            found.loc[missing, "reference_price"] = rows["reference_price"].to_numpy(
                dtype=float)[missing]
            found.loc[missing, "elasticity"] = np.maximum(mean, 0.0)
            found.loc[missing, "elasticity_sd"] = np.sqrt(var)
            found.loc[missing, "evidence_share"] = 0.0
            found.loc[missing, "price_levels"] = 0
        return found[["reference_price", "elasticity", "elasticity_sd", "evidence_share",
                      "price_levels"]]

    def shape(self, found: pd.DataFrame, prices) -> np.ndarray:
        """g(x) at `prices` (one per row, or a (rows, k) array) of the rows `found` describes
        (`for_rows`): x the log ratio of the price to the row's reference price."""
        prices = np.asarray(prices, dtype=float)
        reference = found["reference_price"].to_numpy(dtype=float)
        if prices.ndim == 2:
            reference = reference[:, None]
        return response_shape(np.log(price_ratio(prices, reference)), self.curvature)

    def to_dict(self) -> dict:
        """A JSON-ready form (`from_dict` reads it back)."""
        return {"curvature": self.curvature, "log_likelihood": self.log_likelihood,
                "dispersion": self.dispersion, "table": self.table.to_dict("list"),
                "priors": self.priors.to_dict("list")}

    @classmethod
    def from_dict(cls, data: dict) -> "PriceResponse":
        return cls(pd.DataFrame(data["table"]), pd.DataFrame(data["priors"]),
                   float(data["curvature"]), float(data["log_likelihood"]),
                   float(data.get("dispersion", 1.0)))


def group_key(channel, category) -> str:
    """The pooling group of a series: its channel and category ("channel|category")."""
    return f"{channel}|{'' if category is None or pd.isna(category) else category}"


def _categories(rows: pd.DataFrame) -> pd.Series:
    if "category" in rows.columns:
        return rows["category"]
    return pd.Series([None] * len(rows), index=rows.index)


def _prior_fit(design: _Design, covariates: np.ndarray,
               penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The elasticity every series would share given its `covariates` (series x q: the prior's
    design), each series with its own level (profiled out), fitted on all series at once by
    Newton steps; `penalty` is the ridge precision of each coefficient around its start
    (`PRIOR_START`). Returns the coefficients, their inverse profiled information (at unit
    dispersion) and the log-likelihood."""
    series, n = design.series, design.n
    units, shape = design.units, design.shape
    sold = np.bincount(series, units, n)
    start = np.r_[PRIOR_START, np.zeros(covariates.shape[1] - 1)]
    coef = start.copy()

    def fitted(coef: np.ndarray) -> np.ndarray:
        drop = np.minimum(design.offset - (covariates @ coef)[series] * shape, MAX_EXPONENT)
        level = np.log(np.maximum(sold, 1e-12) / np.bincount(series, np.exp(drop), n))
        return np.exp(np.minimum(drop + level[series], MAX_EXPONENT))

    for _ in range(NEWTON_STEPS):
        mu = fitted(coef)
        score = -np.bincount(series, (units - mu) * shape, n)
        mass, weighted = np.bincount(series, mu, n), np.bincount(series, mu * shape, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            profiled = np.where(mass > 0, weighted**2 / mass, 0.0)
        information = np.bincount(series, mu * shape**2, n) - profiled
        hessian = covariates.T @ (covariates * information[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hessian, covariates.T @ score - penalty * (coef - start))
        coef = coef + np.clip(step, -MAX_STEP, MAX_STEP)
        if np.abs(step).max(initial=0) < 1e-7:
            break
    mu = fitted(coef)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_likelihood = float(np.sum(np.where(units > 0, units * np.log(mu), 0.0) - mu))
    return coef, np.linalg.inv(hessian), log_likelihood


def _unpooled(design: _Design) -> tuple[_Posterior, float, float, np.ndarray]:
    """Each series on its own (a flat prior), its information divided by the shop's
    overdispersion; that dispersion; and the spread of the items' seasons around the base's
    (`_season_variance`): the data of the between-series variance."""
    n = design.n
    flat_mean, flat_var = np.ones(n), np.full(n, FLAT_PRIOR_VARIANCE)
    first, harmonic = _newton(design, flat_mean, flat_var, nonnegative=False)
    # Real orders come in lots (a wholesale order of 100): counts vary more than Poisson ones,
    # so the evidence of each series is divided by the shop's overdispersion.
    parameters = 2 * n + 2 * design.items
    dispersion = max(1.0, first.pearson / max(len(design.units) - parameters, 1))
    season_var = _season_variance(harmonic, dispersion)
    weak, harmonic = _newton(design, flat_mean, flat_var, nonnegative=False,
                             season_var=season_var)
    item = design.item_of[design.series]
    seasonal = (harmonic[item, 0] * np.cos(design.angle)
                + harmonic[item, 1] * np.sin(design.angle))
    return (dataclasses.replace(weak, information=weak.information / dispersion), dispersion,
            season_var, seasonal)


def _season_variance(harmonic: np.ndarray, dispersion: float) -> float:
    """The variance of an item's harmonic coefficients around the base's season, by moments:
    their mean square less their sampling variance, over the items whose data inform them."""
    estimate, variance = harmonic[:, :2], harmonic[:, 2:] * dispersion
    informed = (variance < FLAT_SEASON_VARIANCE / 4).all(axis=1)
    if not informed.any():
        return MIN_SEASON_VARIANCE
    spread = float(np.mean(estimate[informed] ** 2 - variance[informed]))
    return min(max(spread, MIN_SEASON_VARIANCE), FLAT_SEASON_VARIANCE)


def _prior_design(channel_of: np.ndarray, channels: int, category_of: np.ndarray,
                  categories: int, covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prior's design per series (the shop's mean, its channel's and its category's
    deviations from it, the covariates) and the ridge precision of each column."""
    design = np.column_stack([np.ones(len(channel_of)), np.eye(channels)[channel_of],
                              np.eye(categories)[category_of], covariates])
    penalty = np.r_[1.0 / SHOP_PRIOR_SD**2, np.full(channels, 1.0 / CHANNEL_PRIOR_SD**2),
                    np.full(categories, 1.0 / CATEGORY_PRIOR_SD**2),
                    np.full(covariates.shape[1], 1.0 / SLOPE_PRIOR_SD**2)]
    return design, penalty


def _unseen_priors(coef: np.ndarray, covariance: np.ndarray, tau2: float,
                   channel_index: pd.Index, category_index: pd.Index) -> pd.DataFrame:
    """The priors of series unseen in training, at average covariates: per channel x category
    ("channel|category"), per channel (category unknown) and for the shop (UNSEEN: channel
    unknown too), each with the between-series variance and that of what is unknown."""
    channels, categories = len(channel_index), len(category_index)
    width = 1 + channels + categories
    keys, rows, extra = [], [], []
    for c, channel in enumerate(channel_index):
        for k, category in enumerate(category_index):
            keys.append(group_key(channel, category))
            rows.append(np.eye(width)[[0, 1 + c, 1 + channels + k]].sum(axis=0))
            extra.append(0.0)
        keys.append(channel)
        rows.append(np.eye(width)[[0, 1 + c]].sum(axis=0))
        extra.append(CATEGORY_PRIOR_SD**2)
    keys.append(UNSEEN)
    rows.append(np.eye(width)[0])
    extra.append(CHANNEL_PRIOR_SD**2 + CATEGORY_PRIOR_SD**2)
    design = np.array(rows)
    variance = (np.einsum("kq,qr,kr->k", design, covariance[:width, :width], design)
                + tau2 + np.array(extra))
    return pd.DataFrame({"key": keys, "mean": np.maximum(design @ coef[:width], 0.0),
                         "variance": variance})


def _pooled(design: _Design, prior: tuple[np.ndarray, np.ndarray], dispersion: float,
            season_var: float, weak: _Posterior, seasonal: np.ndarray):
    """The posterior of every series, its prior variance, the prior's coefficients with their
    covariance, and tau2. The prior mean of a series is its shop + channel + category +
    covariate elasticity (`_prior_fit` on every series, offset by the items' seasons); its
    variance adds the between-series variance tau2 (`_between_series_variance`, over the series
    whose own sd is below about 3), of which the part sigma_u2 = tau2 - sigma_v2 is shared by
    the item's channels (sigma_v2: the spread of one item's channels around their mean,
    `_random_effects`), so what one channel's data say moves the item's other channels too
    (`_newton`)."""
    covariates, penalty = prior
    coef, inverse, _ = _prior_fit(dataclasses.replace(design, offset=design.offset + seasonal),
                                  covariates, penalty)
    covariance = dispersion * inverse
    mean = covariates @ coef
    mean_var = np.einsum("nq,qr,nr->n", covariates, covariance, covariates)
    informed = weak.information > MIN_INFORMATION
    deviation = weak.elasticity - mean
    usable = weak.information > MIN_TAU2_INFORMATION
    tau2 = max(MIN_TAU2, _between_series_variance(
        deviation[usable], 1.0 / weak.information[usable],
        np.minimum(mean_var * weak.information, 1.0)[usable]))
    _, _, sigma_v2 = _random_effects(deviation[informed], 1.0 / weak.information[informed],
                                     design.item_of[informed], design.items, MIN_TAU2 / 4)
    sigma_u2 = max(tau2 - sigma_v2, MIN_TAU2 / 4)
    own_var = mean_var + sigma_v2
    posterior, _ = _newton(design, np.maximum(mean, 0.0), own_var, nonnegative=True,
                           dispersion=dispersion, season_var=season_var, shared_var=sigma_u2)
    return posterior, own_var + sigma_u2, coef, covariance, tau2


def _covariates(reference: np.ndarray, units: np.ndarray, series: np.ndarray, n: int,
                channel_of: np.ndarray) -> np.ndarray:
    """Per series, its log reference price and log mean units per period, each centred on
    its channel's mean: a series priced above its peers, or selling less than them, sits
    higher on its demand curve, where demand is usually more elastic."""
    volume = np.log(np.bincount(series, units, n) / np.maximum(np.bincount(series, None, n), 1)
                    + VOLUME_FLOOR)
    values = np.column_stack([np.log(reference), volume])
    means = np.stack([np.bincount(channel_of, column) / np.bincount(channel_of)
                      for column in values.T], axis=1)
    return values - means[channel_of]


def fit_price_response(rows: pd.DataFrame, curvatures=CURVATURES) -> PriceResponse:
    """Fit the pooled price response on panel rows with `units`, `log_base` (the base model's
    log prediction at the series' reference price, the price effect left out), `price`,
    `period_start`, item_id, channel and category. Each series' reference price is its latest
    price in `rows`, so its elasticity is the one at the price it is sold at now. The
    curvature whose prior fit (`_prior_fit`, every series) has the highest likelihood wins
    when it beats `DEFAULT_CURVATURE`'s by `LIKELIHOOD_RATIO_THRESHOLD`."""
    if rows.empty:
        raise ValueError("no rows to fit the price response on")
    series_keys = rows[["item_id", "channel"]].astype(str)
    series_index = pd.MultiIndex.from_frame(series_keys)
    codes, uniques = pd.factorize(series_index)
    series, n = np.asarray(codes), len(uniques)
    first = pd.DataFrame({"row": np.arange(len(rows)), "series": series}).groupby(
        "series")["row"].first().to_numpy()
    channel = rows["channel"].astype(str).to_numpy()[first]
    category = _categories(rows).to_numpy()[first]
    group_names = np.array([group_key(c, g) for c, g in zip(channel, category, strict=True)])
    item_of = np.asarray(pd.factorize(uniques.get_level_values(0))[0])
    slot = pd.Series(item_of).groupby(item_of).cumcount().to_numpy()
    channel_of, channel_index = pd.factorize(channel)
    category_of, category_index = pd.factorize(category, use_na_sentinel=False)

    units = rows["units"].to_numpy(dtype=float)
    price = rows["price"].to_numpy(dtype=float)
    period_start = pd.to_datetime(rows["period_start"], utc=True)
    angle = annual_angle(period_start)
    latest = np.argsort(period_start.to_numpy(), kind="stable")
    reference = pd.Series(price[latest]).groupby(series[latest]).last().reindex(
        range(n)).to_numpy()
    log_ratio = np.log(price_ratio(price, reference[series]))
    prior = _prior_design(channel_of, len(channel_index), category_of, len(category_index),
                          _covariates(reference, units, series, n, channel_of))
    log_base = rows["log_base"].to_numpy(dtype=float)

    def design(curvature: float) -> _Design:
        return _Design(series, n, units, log_base, response_shape(log_ratio, curvature), angle,
                       item_of, slot)

    likelihood = {curvature: _prior_fit(design(curvature), *prior)[2]
                  for curvature in curvatures}
    curvature = max(likelihood, key=likelihood.__getitem__)
    if (DEFAULT_CURVATURE in likelihood and likelihood[curvature]
            - likelihood[DEFAULT_CURVATURE] < LIKELIHOOD_RATIO_THRESHOLD):
        curvature = DEFAULT_CURVATURE
    chosen = design(curvature)
    weak, dispersion, season_var, seasonal = _unpooled(chosen)
    posterior, prior_var, coef, covariance, tau2 = _pooled(chosen, prior, dispersion,
                                                           season_var, weak, seasonal)

    levels = pd.Series(np.round(price, 2)).groupby(series).nunique()
    table = pd.DataFrame({
        "item_id": uniques.get_level_values(0), "channel": uniques.get_level_values(1),
        "group": group_names, "reference_price": reference,
        "elasticity": posterior.elasticity, "elasticity_sd": np.sqrt(posterior.variance),
        "evidence_share": weak.information / (weak.information + 1.0 / prior_var),
        "price_levels": levels.reindex(range(n), fill_value=0).to_numpy(),
    })
    return PriceResponse(table, _unseen_priors(coef, covariance, tau2, channel_index,
                                               category_index), float(curvature),
                         posterior.log_likelihood, dispersion)
