"""Item x channel price response, partially pooled towards its category and channel.

Each series s (an item on a channel) answers a price `p` with

    log E[units] = log base + alpha_s - elasticity_s * g(x),   x = log(p / reference_price)
    g(x) = (exp(curvature * x) - 1) / curvature   (g(x) = x when curvature = 0)

where `base` is the base-level model's prediction (seasonality, trend, recent demand: the
LightGBM of `models.pricing.demand`), `alpha_s` a level correction and `elasticity_s` the price
elasticity |d ln q / d ln p| at the reference price. At price p the elasticity is
`elasticity_s * (p / reference_price) ** curvature`: 0 is constant elasticity (log-log),
1 the semi-log shape, larger values demand that falls faster than exponentially. The curvature
is one number for the whole shop, chosen by likelihood (`fit_price_response`): the semi-log
shape unless another fits the series' own (unpooled) estimates clearly better.

Partial pooling (empirical Bayes). A series' own data identify its elasticity only through its
own price changes: `information_s` = sum mu * (g - weighted mean of g)^2, 0 for a series never
repriced. The prior of a series is its group (channel x category) mean, itself shrunk towards
its channel mean; the between-series variance `tau2` and the between-group variance are
estimated from the series' own estimates by the DerSimonian-Laird method of moments. The
posterior (a Laplace approximation at the mode) moves from the group's mean to the series' own
estimate in proportion to the evidence: `evidence_share = information / (information +
1 / prior_variance)`. Elasticities are kept >= 0, so demand never rises with price.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

CURVATURES = (0.0, 0.5, 1.0, 2.0, 3.0)
DEFAULT_CURVATURE = 1.0  # semi-log, kept unless another curvature fits clearly better:
LIKELIHOOD_RATIO_THRESHOLD = 1.92  # half the 95% quantile of chi-square(1)
MAX_ELASTICITY = 6.0  # elasticities are kept in [0, 6]: demand never rises with price, and an
# estimate beyond 6 (a price variation confounded with order size, say) is not believed
MAX_LOG_RATIO = float(np.log(3.0))  # prices beyond 3x or below 1/3 of the reference respond
# as at those bounds
# Prior sds of each series' nuisance coefficients (`_nuisance_columns`): a level correction
# (the base model already fits each series' level), the annual season's sine and cosine and a
# trend per year. They absorb what the base level misses of the series' own season and trend,
# which would otherwise pass for a price effect when a price change falls on a seasonal swing.
NUISANCE_PRIOR_SD = np.array([1.0, 0.5, 0.5, 0.5])
MIN_TAU2 = 0.01  # series elasticities are never pooled tighter than +-0.1 around their group
MIN_INFORMATION = 1.0  # series whose own estimate has an sd above 1 do not inform the
# hyperparameters (their unpooled estimates are mostly noise, some diverge)
FLAT_PRIOR_VARIANCE = 1e4
NEWTON_STEPS = 30
MAX_STEP = 1.0
MAX_EXPONENT = 30.0  # log-demand is clipped here so a wild step cannot overflow
UNSEEN_CHANNEL_VARIANCE = 0.25  # a channel with no repriced series: +-0.5 around the shop
MIN_PEARSON_MEAN = 0.5  # a sale where the fit expects ~0 does not make the whole shop noisy
SLOPE_PRIOR_SD = 1.0  # of the prior's slopes on a series' relative price and volume
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
    g(x) and nuisance columns (`_nuisance_columns`: level, annual season, trend)."""

    series: np.ndarray
    n: int
    units: np.ndarray
    offset: np.ndarray
    shape: np.ndarray
    nuisance: np.ndarray  # (rows, len(NUISANCE_PRIOR_SD))


def annual_angle(ts: pd.Series) -> np.ndarray:
    """The day of year of each timestamp as an angle on the unit circle (radians)."""
    return 2 * np.pi * (ts.dt.dayofyear.to_numpy(dtype=float) - 1) / DAYS_PER_YEAR


def _nuisance_columns(period_start: pd.Series) -> np.ndarray:
    """Per row: 1 (level), sin and cos of the day of year (season) and years from the middle
    of the history (trend)."""
    ts = pd.to_datetime(period_start, utc=True)
    angle = annual_angle(ts)
    years = ((ts - ts.min()) / pd.Timedelta(days=DAYS_PER_YEAR)).to_numpy(dtype=float)
    years = years - years.max() / 2 if len(years) else years
    return np.column_stack([np.ones(len(ts)), np.sin(angle), np.cos(angle), years])


def _newton(design: _Design, prior_mean: np.ndarray, prior_var: np.ndarray, nonnegative: bool,
            dispersion: float = 1.0) -> _Posterior:
    """Posterior mode of every series' nuisance coefficients and elasticity at once, under the
    quasi-Poisson likelihood with `dispersion` (variance = dispersion x mean)."""
    series, n = design.series, design.n
    columns = np.column_stack([design.nuisance, -design.shape])
    k = columns.shape[1]
    prior_precision = np.column_stack([np.tile(1.0 / NUISANCE_PRIOR_SD**2, (n, 1)),
                                       1.0 / prior_var])
    center = np.column_stack([np.zeros((n, k - 1)), prior_mean])
    beta = center.copy()
    if nonnegative:
        beta[:, -1] = np.clip(beta[:, -1], 0.0, MAX_ELASTICITY)

    def curvature_matrix(mu: np.ndarray) -> np.ndarray:
        hessian = np.empty((n, k, k))
        for a in range(k):
            for b in range(a, k):
                hessian[:, a, b] = hessian[:, b, a] = np.bincount(
                    series, mu * columns[:, a] * columns[:, b], n)
        return hessian

    for _ in range(NEWTON_STEPS):
        eta = np.minimum(design.offset + np.einsum("rk,rk->r", columns, beta[series]),
                         MAX_EXPONENT)
        mu = np.exp(eta)
        residual = (design.units - mu) / dispersion
        gradient = (np.column_stack([np.bincount(series, residual * columns[:, a], n)
                                     for a in range(k)])
                    - prior_precision * (beta - center))
        hessian = curvature_matrix(mu / dispersion)
        hessian[:, np.arange(k), np.arange(k)] += prior_precision
        step = np.clip(np.linalg.solve(hessian, gradient[..., None])[..., 0], -MAX_STEP, MAX_STEP)
        beta = beta + step
        if nonnegative:
            beta[:, -1] = np.clip(beta[:, -1], 0.0, MAX_ELASTICITY)
        if np.abs(step).max(initial=0) < 1e-7:
            break
    eta = np.minimum(design.offset + np.einsum("rk,rk->r", columns, beta[series]), MAX_EXPONENT)
    mu = np.exp(eta)
    log_likelihood = float(np.sum(design.units * eta - mu))
    pearson = float(np.sum((design.units - mu) ** 2 / np.maximum(mu, MIN_PEARSON_MEAN)))
    # The elasticity's information from the series' own data, the nuisance profiled out.
    hessian = curvature_matrix(mu / dispersion)
    nuisance = hessian[:, :-1, :-1].copy()
    nuisance[:, np.arange(k - 1), np.arange(k - 1)] += prior_precision[:, :-1]
    cross = hessian[:, :-1, -1]
    information = hessian[:, -1, -1] - np.einsum(
        "nk,nk->n", cross, np.linalg.solve(nuisance, cross[..., None])[..., 0])
    information = np.maximum(information, 0.0)
    variance = 1.0 / (information + 1.0 / prior_var)
    return _Posterior(beta[:, -1], variance, information, log_likelihood, pearson)


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


@dataclass(frozen=True)
class PriceResponse:
    """The fitted price response: one row per series in `table` (item_id, channel, group,
    alpha, elasticity, elasticity_sd, evidence_share, price_levels), the group and channel
    priors for series not seen in training, and the shop-wide curvature."""

    table: pd.DataFrame
    priors: pd.DataFrame  # key ("channel|category", "channel" or UNSEEN) -> mean, variance
    curvature: float
    log_likelihood: float

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
                "table": self.table.to_dict("list"), "priors": self.priors.to_dict("list")}

    @classmethod
    def from_dict(cls, data: dict) -> "PriceResponse":
        return cls(pd.DataFrame(data["table"]), pd.DataFrame(data["priors"]),
                   float(data["curvature"]), float(data["log_likelihood"]))


def group_key(channel, category) -> str:
    """The pooling group of a series: its channel and category ("channel|category")."""
    return f"{channel}|{'' if category is None or pd.isna(category) else category}"


def _categories(rows: pd.DataFrame) -> pd.Series:
    if "category" in rows.columns:
        return rows["category"]
    return pd.Series([None] * len(rows), index=rows.index)


def _item_effects(deviation: np.ndarray, information: np.ndarray, item_of: np.ndarray,
                  tau2: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Per series, the mean and variance of its item's shared deviation from the group mean
    learnt from the item's other channels only (its own data enter through its likelihood),
    and the between-channel variance of one item's elasticities, sigma_v2."""
    items = int(item_of.max()) + 1 if len(item_of) else 0
    informed = information > MIN_INFORMATION
    _, _, sigma_v2 = _random_effects(deviation[informed], 1.0 / information[informed],
                                     item_of[informed], items, MIN_TAU2 / 4)
    sigma_u2 = max(tau2 - sigma_v2, MIN_TAU2 / 4)
    usable = information > MIN_INFORMATION / 10
    with np.errstate(divide="ignore"):
        weight = np.where(usable, 1.0 / (1.0 / information + sigma_v2), 0.0)
    deviation = np.clip(np.where(usable, deviation, 0.0), -5.0, 5.0)
    others = np.bincount(item_of, weight, items)[item_of] - weight
    others_sum = np.bincount(item_of, weight * deviation, items)[item_of] - weight * deviation
    precision = 1.0 / sigma_u2 + others
    return others_sum / precision, 1.0 / precision, sigma_v2


def _common_elasticity(design: _Design, pool: np.ndarray, pools: int,
                       dispersion: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pool (row -> pool index), the elasticity common to all its series, each series with
    its own level (profiled out), and its variance; a pool without price variation gets 0
    with `UNSEEN_CHANNEL_VARIANCE`."""
    series, units, offset, shape = design.series, design.units, design.offset, design.shape
    n = int(series.max()) + 1 if len(series) else 0
    elasticity = np.ones(pools)
    information = np.zeros(pools, dtype=float)
    sold = np.bincount(series, units, n)
    for _ in range(NEWTON_STEPS):
        drop = np.minimum(offset - elasticity[pool] * shape, MAX_EXPONENT)
        level = np.log(np.maximum(sold, 1e-12) / np.bincount(series, np.exp(drop), n))
        mu = np.exp(np.minimum(drop + level[series], MAX_EXPONENT))
        score = -np.bincount(pool, (units - mu) * shape, pools)
        weighted = np.bincount(series, mu * shape, n)
        mass = np.bincount(series, mu, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            profiled = np.where(mass > 0, weighted**2 / mass, 0.0)
        series_pool = np.zeros(n, dtype=int)
        series_pool[series] = pool
        information = np.asarray(np.bincount(pool, mu * shape**2, pools)
                                 - np.bincount(series_pool, profiled, pools), dtype=float)
        step = np.where(information > 1e-9, score / np.maximum(information, 1e-9), 0.0)
        elasticity = np.clip(elasticity + np.clip(step, -MAX_STEP, MAX_STEP), 0, MAX_ELASTICITY)
        if np.abs(step).max(initial=0) < 1e-7:
            break
    identified = information > 1e-9
    return (np.where(identified, elasticity, 0.0),
            np.where(identified, dispersion / np.maximum(information, 1e-9),
                     UNSEEN_CHANNEL_VARIANCE))


def _unpooled(design: _Design) -> tuple[_Posterior, float]:
    """Each series on its own (a flat prior), its information divided by the shop's
    overdispersion, and that dispersion: the curvature's likelihood and the hyperparameters'
    data."""
    n = design.n
    weak = _newton(design, np.ones(n), np.full(n, FLAT_PRIOR_VARIANCE), nonnegative=False)
    # Real orders come in lots (a wholesale order of 100): counts vary more than Poisson ones,
    # so the evidence of each series is divided by the shop's overdispersion.
    parameters = n * (design.nuisance.shape[1] + 1)
    dispersion = max(1.0, weak.pearson / max(len(design.units) - parameters, 1))
    return dataclasses.replace(weak, information=weak.information / dispersion), dispersion


def _covariate_slopes(estimate: np.ndarray, variance: np.ndarray, group: np.ndarray, groups: int,
                      covariates: np.ndarray) -> np.ndarray:
    """Weighted least squares slopes of the estimates on the covariates within groups (a
    mean per group), ridge-penalised by `SLOPE_PRIOR_SD`: 0 when nothing informs them."""
    weight = 1.0 / variance
    design = np.column_stack([np.eye(groups)[group], covariates])
    penalty = np.r_[np.zeros(groups), np.full(covariates.shape[1], 1.0 / SLOPE_PRIOR_SD**2)]
    normal = design.T @ (design * weight[:, None]) + np.diag(penalty)
    normal[np.arange(groups), np.arange(groups)] += 1e-9  # groups without informed series
    return np.linalg.solve(normal, design.T @ (weight * estimate))[groups:]


def _pooled(design: _Design, group_of: np.ndarray, groups: int, channel_of_group: np.ndarray,
            channels: int, item_of: np.ndarray, covariates: np.ndarray, weak: _Posterior,
            dispersion: float):
    """The posterior of every series under the hierarchical prior learnt from `weak` (group
    means plus `covariates` x slopes), its prior variance, and the priors of unseen groups,
    channels and the shop."""
    informed = weak.information > MIN_INFORMATION
    estimate, variance = weak.elasticity[informed], 1.0 / weak.information[informed]
    _, _, tau2 = _random_effects(estimate, variance, group_of[informed], groups, MIN_TAU2)
    slopes = _covariate_slopes(estimate, variance + tau2, group_of[informed], groups,
                               covariates[informed])
    explained = covariates @ slopes
    group_mean, group_var, tau2 = _random_effects(estimate - explained[informed], variance,
                                                  group_of[informed], groups, MIN_TAU2)
    seen = ~np.isnan(group_mean)
    channel_mean, channel_var, omega2 = _random_effects(
        group_mean[seen], group_var[seen], channel_of_group[seen], channels)
    seen_channels = ~np.isnan(channel_mean)
    shop_mean, shop_var, _ = _random_effects(channel_mean[seen_channels],
                                             channel_var[seen_channels],
                                             np.zeros(int(seen_channels.sum()), int), 1)
    if not seen_channels.any():  # no series informs on its own: one elasticity for the shop,
        shop_mean, shop_var = _common_elasticity(  # the evidence of all its series pooled
            design, np.zeros(len(design.units), dtype=int), 1, dispersion)
    # A channel without evidence takes the shop's mean; a group is shrunk towards its channel.
    channel_mean = np.where(seen_channels, channel_mean, shop_mean[0])
    channel_var = np.where(seen_channels, channel_var,
                           shop_var[0] + max(omega2, UNSEEN_CHANNEL_VARIANCE))
    parent_mean, parent_var = channel_mean[channel_of_group], channel_var[channel_of_group] + omega2
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen, 1.0 / group_var, 0.0) + 1.0 / parent_var
        pooled_mean = (np.where(seen, group_mean / group_var, 0.0)
                       + parent_mean / parent_var) / precision
    pooled_var = 1.0 / precision

    item_mean, item_var, sigma_v2 = _item_effects(
        weak.elasticity - pooled_mean[group_of] - explained, weak.information, item_of, tau2)
    prior_mean = pooled_mean[group_of] + explained + item_mean
    prior_var = pooled_var[group_of] + item_var + sigma_v2
    posterior = _newton(design, prior_mean, prior_var, nonnegative=True, dispersion=dispersion)
    priors = {
        "group_mean": pooled_mean, "group_var": pooled_var + tau2,
        "channel_mean": channel_mean, "channel_var": channel_var + omega2 + tau2,
        "shop": (float(shop_mean[0]), float(shop_var[0] + omega2 + tau2)),
    }
    return posterior, prior_var, priors


def _covariates(reference: np.ndarray, units: np.ndarray, series: np.ndarray, n: int,
                group_of: np.ndarray) -> np.ndarray:
    """Per series, its log reference price and log mean units per period, each centred on
    its group's mean: a series priced above its peers, or selling less than them, sits
    higher on its demand curve, where demand is usually more elastic."""
    volume = np.log(np.bincount(series, units, n) / np.maximum(np.bincount(series, None, n), 1)
                    + VOLUME_FLOOR)
    values = np.column_stack([np.log(reference), volume])
    means = np.stack([np.bincount(group_of, column) / np.bincount(group_of)
                      for column in values.T], axis=1)
    return values - means[group_of]


def fit_price_response(rows: pd.DataFrame, curvatures=CURVATURES) -> PriceResponse:
    """Fit the pooled price response on panel rows with `units`, `log_base` (the base model's
    log prediction at the series' reference price, the price effect left out), `price`,
    `period_start`, item_id, channel and category. Each series' reference price is the median
    of its prices in `rows`. The curvature whose unpooled fit has the highest likelihood wins
    when it beats `DEFAULT_CURVATURE`'s by `LIKELIHOOD_RATIO_THRESHOLD`; the series are then
    pooled at that curvature only."""
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
    group_of, group_index = pd.factorize(group_names)
    group_channel = pd.Series(channel).groupby(group_of).first()
    item_of = pd.factorize(uniques.get_level_values(0))[0]
    channel_of_group, channel_index = pd.factorize(group_channel.to_numpy())

    price = rows["price"].to_numpy(dtype=float)
    reference = pd.Series(price).groupby(series).median().reindex(range(n)).to_numpy()
    log_ratio = np.log(price_ratio(price, reference[series]))
    nuisance = _nuisance_columns(rows["period_start"])

    def design(curvature: float) -> _Design:
        return _Design(series, n, rows["units"].to_numpy(dtype=float),
                       rows["log_base"].to_numpy(dtype=float),
                       response_shape(log_ratio, curvature), nuisance)

    fits = {curvature: _unpooled(design(curvature)) for curvature in curvatures}
    likelihood = {curvature: weak.log_likelihood for curvature, (weak, _) in fits.items()}
    curvature = max(likelihood, key=likelihood.__getitem__)
    if (DEFAULT_CURVATURE in likelihood and likelihood[curvature]
            - likelihood[DEFAULT_CURVATURE] < LIKELIHOOD_RATIO_THRESHOLD):
        curvature = DEFAULT_CURVATURE
    posterior, prior_var, priors = _pooled(
        design(curvature), np.asarray(group_of), len(group_index), np.asarray(channel_of_group),
        len(channel_index), np.asarray(item_of),
        _covariates(reference, rows["units"].to_numpy(dtype=float), series, n,
                    np.asarray(group_of)), *fits[curvature])

    levels = pd.Series(np.round(price, 2)).groupby(series).nunique()
    table = pd.DataFrame({
        "item_id": uniques.get_level_values(0), "channel": uniques.get_level_values(1),
        "group": group_names, "reference_price": reference,
        "elasticity": posterior.elasticity, "elasticity_sd": np.sqrt(posterior.variance),
        "evidence_share": posterior.information / (posterior.information + 1.0 / prior_var),
        "price_levels": levels.reindex(range(n), fill_value=0).to_numpy(),
    })
    prior_rows = [
        *({"key": key, "mean": m, "variance": v} for key, m, v in
          zip(group_index, priors["group_mean"], priors["group_var"], strict=True)),
        *({"key": key, "mean": m, "variance": v} for key, m, v in
          zip(channel_index, priors["channel_mean"], priors["channel_var"], strict=True)),
        {"key": UNSEEN, "mean": priors["shop"][0], "variance": priors["shop"][1]},
    ]
    return PriceResponse(table, pd.DataFrame(prior_rows), float(curvature),
                         posterior.log_likelihood)
