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
ALPHA_PRIOR_SD = 1.0  # level corrections: the base model already fits each series' level
MIN_TAU2 = 0.01  # series elasticities are never pooled tighter than +-0.1 around their group
MIN_INFORMATION = 1.0  # series whose own estimate has an sd above 1 do not inform the
# hyperparameters (their unpooled estimates are mostly noise, some diverge)
FLAT_PRIOR_VARIANCE = 1e4
NEWTON_STEPS = 30
MAX_STEP = 1.0
MAX_EXPONENT = 30.0  # log-demand is clipped here so a wild step cannot overflow
UNSEEN_CHANNEL_VARIANCE = 0.25  # a channel with no repriced series: +-0.5 around the shop
MIN_PEARSON_MEAN = 0.5  # a sale where the fit expects ~0 does not make the whole shop noisy
UNSEEN = "*"  # the group and channel key of nothing seen in training


def response_shape(x: np.ndarray, curvature: float) -> np.ndarray:
    """g(x): the log-demand drop per unit of elasticity at log price ratio `x` (clipped to
    +-`MAX_LOG_RATIO`: the response is not extrapolated further)."""
    x = np.clip(np.asarray(x, dtype=float), -MAX_LOG_RATIO, MAX_LOG_RATIO)
    if curvature == 0:
        return x
    return np.expm1(curvature * x) / curvature


@dataclass(frozen=True)
class _Posterior:
    alpha: np.ndarray
    elasticity: np.ndarray
    variance: np.ndarray  # of the elasticity, at the mode
    information: np.ndarray  # of the elasticity from the series' own data (profiled over alpha)
    log_likelihood: float
    pearson: float  # sum of squared Pearson residuals (means floored at MIN_PEARSON_MEAN)


def _newton(series: np.ndarray, n: int, units: np.ndarray, offset: np.ndarray,
            shape: np.ndarray, prior_mean: np.ndarray, prior_var: np.ndarray,
            nonnegative: bool, dispersion: float = 1.0) -> _Posterior:
    """Posterior mode of (alpha_s, elasticity_s) for every series at once, under the
    quasi-Poisson likelihood with `dispersion` (variance = dispersion x mean)."""
    alpha, elasticity = np.zeros(n), prior_mean.copy()
    if nonnegative:
        elasticity = np.clip(elasticity, 0.0, MAX_ELASTICITY)
    alpha_precision = 1.0 / ALPHA_PRIOR_SD**2
    for _ in range(NEWTON_STEPS):
        eta = np.minimum(offset + alpha[series] - elasticity[series] * shape, MAX_EXPONENT)
        mu = np.exp(eta)
        residual = (units - mu) / dispersion
        mu = mu / dispersion
        grad_alpha = np.bincount(series, residual, n) - alpha * alpha_precision
        grad_elasticity = (-np.bincount(series, residual * shape, n)
                           - (elasticity - prior_mean) / prior_var)
        h_aa = np.bincount(series, mu, n) + alpha_precision
        h_ae = -np.bincount(series, mu * shape, n)
        h_ee = np.bincount(series, mu * shape**2, n) + 1.0 / prior_var
        det = h_aa * h_ee - h_ae**2
        step_alpha = np.clip((h_ee * grad_alpha - h_ae * grad_elasticity) / det, -MAX_STEP,
                             MAX_STEP)
        step_elasticity = np.clip((h_aa * grad_elasticity - h_ae * grad_alpha) / det,
                                  -MAX_STEP, MAX_STEP)
        alpha = alpha + step_alpha
        elasticity = elasticity + step_elasticity
        if nonnegative:
            elasticity = np.clip(elasticity, 0.0, MAX_ELASTICITY)
        if max(np.abs(step_alpha).max(initial=0), np.abs(step_elasticity).max(initial=0)) < 1e-7:
            break
    eta = np.minimum(offset + alpha[series] - elasticity[series] * shape, MAX_EXPONENT)
    mu = np.exp(eta)
    log_likelihood = float(np.sum(units * eta - mu))
    pearson = float(np.sum((units - mu) ** 2 / np.maximum(mu, MIN_PEARSON_MEAN)))
    mu = mu / dispersion
    h_aa = np.bincount(series, mu, n) + alpha_precision
    h_ae = -np.bincount(series, mu * shape, n)
    information = np.bincount(series, mu * shape**2, n) - h_ae**2 / h_aa
    variance = 1.0 / (np.maximum(information, 0.0) + 1.0 / prior_var)
    return _Posterior(alpha, elasticity, variance, np.maximum(information, 0.0), log_likelihood,
                      pearson)


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
        """Per row (item_id, channel, category): alpha, elasticity, elasticity_sd,
        evidence_share and price_levels; series unseen in training take their group's prior
        (their channel's, the shop's when those are unseen too) with no evidence."""
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
            found.loc[missing, "alpha"] = 0.0
            found.loc[missing, "elasticity"] = np.maximum(mean, 0.0)
            found.loc[missing, "elasticity_sd"] = np.sqrt(var)
            found.loc[missing, "evidence_share"] = 0.0
            found.loc[missing, "price_levels"] = 0
        return found[["alpha", "elasticity", "elasticity_sd", "evidence_share", "price_levels"]]

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


def _common_elasticity(series: np.ndarray, units: np.ndarray, offset: np.ndarray,
                       shape: np.ndarray, pool: np.ndarray, pools: int,
                       dispersion: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pool (row -> pool index), the elasticity common to all its series, each series with
    its own level (profiled out), and its variance; a pool without price variation gets 0
    with `UNSEEN_CHANNEL_VARIANCE`."""
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


def _unpooled(rows: pd.DataFrame, series: np.ndarray, n: int,
              curvature: float) -> tuple[_Posterior, float]:
    """Each series on its own (a flat prior), its information divided by the shop's
    overdispersion, and that dispersion: the curvature's likelihood and the hyperparameters'
    data."""
    units = rows["units"].to_numpy(dtype=float)
    shape = response_shape(rows["log_price_ratio"].to_numpy(dtype=float), curvature)
    weak = _newton(series, n, units, rows["log_base"].to_numpy(dtype=float), shape, np.ones(n),
                   np.full(n, FLAT_PRIOR_VARIANCE), nonnegative=False)
    # Real orders come in lots (a wholesale order of 100): counts vary more than Poisson ones,
    # so the evidence of each series is divided by the shop's overdispersion.
    dispersion = max(1.0, weak.pearson / max(len(units) - 2 * n, 1))
    return dataclasses.replace(weak, information=weak.information / dispersion), dispersion


def _pooled(rows: pd.DataFrame, series: np.ndarray, n: int, group_of: np.ndarray, groups: int,
            channel_of_group: np.ndarray, channels: int, item_of: np.ndarray, curvature: float,
            weak: _Posterior, dispersion: float):
    """The posterior of every series under the hierarchical prior learnt from `weak`, its
    prior variance, and the priors of unseen groups, channels and the shop."""
    units = rows["units"].to_numpy(dtype=float)
    offset = rows["log_base"].to_numpy(dtype=float)
    shape = response_shape(rows["log_price_ratio"].to_numpy(dtype=float), curvature)
    informed = weak.information > MIN_INFORMATION
    estimate, variance = weak.elasticity[informed], 1.0 / weak.information[informed]
    group_mean, group_var, tau2 = _random_effects(estimate, variance, group_of[informed], groups,
                                                  MIN_TAU2)
    seen = ~np.isnan(group_mean)
    channel_mean, channel_var, omega2 = _random_effects(
        group_mean[seen], group_var[seen], channel_of_group[seen], channels)
    seen_channels = ~np.isnan(channel_mean)
    shop_mean, shop_var, _ = _random_effects(channel_mean[seen_channels],
                                             channel_var[seen_channels],
                                             np.zeros(int(seen_channels.sum()), int), 1)
    if not seen_channels.any():  # no series informs on its own: one elasticity for the shop,
        shop_mean, shop_var = _common_elasticity(  # the evidence of all its series pooled
            series, units, offset, shape, np.zeros(len(units), dtype=int), 1, dispersion)
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

    item_mean, item_var, sigma_v2 = _item_effects(weak.elasticity - pooled_mean[group_of],
                                                   weak.information, item_of, tau2)
    prior_mean = pooled_mean[group_of] + item_mean
    prior_var = pooled_var[group_of] + item_var + sigma_v2
    posterior = _newton(series, n, units, offset, shape, prior_mean, prior_var, nonnegative=True,
                        dispersion=dispersion)
    priors = {
        "group_mean": pooled_mean, "group_var": pooled_var + tau2,
        "channel_mean": channel_mean, "channel_var": channel_var + omega2 + tau2,
        "shop": (float(shop_mean[0]), float(shop_var[0] + omega2 + tau2)),
    }
    return posterior, prior_var, priors


def fit_price_response(rows: pd.DataFrame, curvatures=CURVATURES) -> PriceResponse:
    """Fit the pooled price response on panel rows with `units`, `log_base` (the base model's
    log prediction, the price effect left out), `log_price_ratio`, item_id, channel and
    category. The curvature whose unpooled fit has the highest likelihood wins when it beats
    `DEFAULT_CURVATURE`'s by `LIKELIHOOD_RATIO_THRESHOLD`; the series are then pooled at that
    curvature only."""
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

    fits = {curvature: _unpooled(rows, series, n, curvature) for curvature in curvatures}
    likelihood = {curvature: weak.log_likelihood for curvature, (weak, _) in fits.items()}
    curvature = max(likelihood, key=likelihood.__getitem__)
    if (DEFAULT_CURVATURE in likelihood and likelihood[curvature]
            - likelihood[DEFAULT_CURVATURE] < LIKELIHOOD_RATIO_THRESHOLD):
        curvature = DEFAULT_CURVATURE
    posterior, prior_var, priors = _pooled(
        rows, series, n, np.asarray(group_of), len(group_index), np.asarray(channel_of_group),
        len(channel_index), np.asarray(item_of), curvature, *fits[curvature])

    prices = rows["log_price_ratio"].round(3)
    levels = prices.groupby(series).nunique().reindex(range(n), fill_value=0).to_numpy()
    table = pd.DataFrame({
        "item_id": uniques.get_level_values(0), "channel": uniques.get_level_values(1),
        "group": group_names, "alpha": posterior.alpha, "elasticity": posterior.elasticity,
        "elasticity_sd": np.sqrt(posterior.variance),
        "evidence_share": posterior.information / (posterior.information + 1.0 / prior_var),
        "price_levels": levels,
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
