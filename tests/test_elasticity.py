import numpy as np
import pandas as pd
import pytest

from models.pricing.demand import DemandModel, demand_curves
from models.pricing.elasticity import (
    MAX_ELASTICITY,
    PriceResponse,
    fit_price_response,
    response_shape,
)
from models.pricing.experiments import plan_price_tests
from models.pricing.guardrails import Guardrails
from models.pricing.optimizer import DemandCurves, optimize_prices

WEEKS = 52
REFERENCE_PRICE = 10.0  # every series' list price: its prices are this x the ratios


def series_rows(item: str, channel: str, elasticity: float, base: float, ratios: np.ndarray,
                rng: np.random.Generator, curvature: float = 1.0,
                category: str = "sewing") -> pd.DataFrame:
    """Weekly Poisson sales of one series at price ratios `ratios` (to its reference) with a
    known base level and elasticity."""
    x = np.log(ratios)
    mean = base * np.exp(-elasticity * response_shape(x, curvature))
    weeks = pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(np.arange(len(x)), unit="W")
    return pd.DataFrame({"item_id": item, "channel": channel, "category": category,
                         "units": rng.poisson(mean).astype(float), "log_base": np.log(base),
                         "log_price_ratio": x, "price": REFERENCE_PRICE * ratios,
                         "period_start": weeks})


def history_with_tests(rng: np.random.Generator, weeks: int = WEEKS, tests: int = 6) -> np.ndarray:
    """A flat list price with `tests` two-week price tests at -20% to +30%."""
    ratios = np.ones(weeks)
    for start in rng.choice(weeks - 2, tests, replace=False):
        ratios[start:start + 2] = rng.choice([0.8, 0.9, 1.15, 1.3])
    return ratios


def market_rows(rng, elasticities, base=8.0, curvature=1.0) -> pd.DataFrame:
    return pd.concat([series_rows(f"i{n}", "web", e, base, history_with_tests(rng), rng, curvature)
                      for n, e in enumerate(elasticities)], ignore_index=True)


def test_price_response_recovers_the_elasticities_and_the_curvature():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.8, 3.0, 120)
    response = fit_price_response(market_rows(rng, truth, base=40.0))

    estimate = response.table.set_index("item_id").loc[[f"i{n}" for n in range(120)]]
    assert response.curvature == 1.0
    assert np.corrcoef(estimate["elasticity"], truth)[0, 1] > 0.8
    assert abs(estimate["elasticity"].mean() - truth.mean()) < 0.15
    inside = ((estimate["elasticity"] - 1.3 * estimate["elasticity_sd"] <= truth)
              & (truth <= estimate["elasticity"] + 1.3 * estimate["elasticity_sd"]))
    assert inside.mean() > 0.7  # an 80% interval holds the truth about that often


def test_pooled_estimate_moves_towards_the_series_own_as_its_evidence_grows():
    rng = np.random.default_rng(2)
    others = market_rows(rng, rng.uniform(1.0, 1.6, 60))
    group_mean = None
    shares, estimates = [], []
    for weeks_of_tests in (0, 2, 8, 30):
        ratios = np.ones(WEEKS)
        ratios[:weeks_of_tests] = np.tile([0.8, 1.3], WEEKS)[:weeks_of_tests]
        target = series_rows("target", "web", 4.0, 8.0, ratios, np.random.default_rng(9))
        response = fit_price_response(pd.concat([others, target], ignore_index=True))
        row = response.table.set_index("item_id").loc["target"]
        shares.append(row["evidence_share"])
        estimates.append(row["elasticity"])
        if weeks_of_tests == 0:
            group_mean = response.table["elasticity"].iloc[:-1].mean()

    # Never repriced: the group's prior, no evidence of its own; then more weight, nearer 4.
    assert shares[0] == 0
    assert estimates[0] == pytest.approx(group_mean, abs=0.15)
    assert shares == sorted(shares) and shares[1] > 0 and shares[-1] < 1
    assert estimates == sorted(estimates)
    assert estimates[-1] > 3.0


def test_elasticities_stay_within_zero_and_the_cap():
    rng = np.random.default_rng(3)
    ratios = np.tile([0.7, 1.3], WEEKS // 2)
    rising = series_rows("rising", "web", 0.0, 8.0, ratios, rng).assign(
        units=lambda rows: np.where(np.log(ratios) > 0, 30.0, 2.0))  # sells more when dearer
    steep = series_rows("steep", "web", 0.0, 8.0, ratios, rng).assign(
        units=lambda rows: np.where(np.log(ratios) > 0, 0.0, 200.0))
    response = fit_price_response(pd.concat([rising, steep, market_rows(rng, [1.5] * 20)],
                                            ignore_index=True))
    table = response.table.set_index("item_id")
    assert table.loc["rising", "elasticity"] == 0.0
    assert table.loc["steep", "elasticity"] == MAX_ELASTICITY


def test_unseen_series_take_their_group_then_channel_then_shop_prior():
    rng = np.random.default_rng(4)
    rows = pd.concat([market_rows(rng, [2.0] * 30),
                      market_rows(rng, [1.0] * 30).assign(channel="etsy")], ignore_index=True)
    response = PriceResponse.from_dict(fit_price_response(rows).to_dict())  # as registered
    unseen = pd.DataFrame({"item_id": ["new", "new", "new"], "channel": ["web", "etsy", "ebay"],
                           "category": ["sewing", "quilting", "sewing"],
                           "reference_price": [4.0, 5.0, 6.0]})
    found = response.for_rows(unseen)
    assert (found["evidence_share"] == 0).all()
    assert found["reference_price"].tolist() == [4.0, 5.0, 6.0]  # their own, none learnt
    assert found["elasticity"].iloc[0] == pytest.approx(2.0, abs=0.2)  # web|sewing
    assert found["elasticity"].iloc[1] == pytest.approx(1.0, abs=0.2)  # etsy, other category
    assert 1.0 < found["elasticity"].iloc[2] < 2.0  # a channel never seen: the shop's
    assert found["elasticity_sd"].iloc[2] > found["elasticity_sd"].iloc[0]


def offer_frame(current: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["i1"], "channel": ["web"], "unit_cost": [2.0], "fee_percent": [0.0],
        "fee_fixed": [0.0], "current_price": [current], "min_price": [1.0],
        "max_price": [np.nan], "observed_min_price": [current], "observed_max_price": [current],
    })


def constant_elasticity(elasticity: float):
    def expected_units(rows, prices):
        current = rows["current_price"].to_numpy(dtype=float)
        return 10.0 * (np.asarray(prices) / current) ** -elasticity
    return expected_units


RULES = Guardrails(max_change_percent=20, trust_band_percent=50, price_endings=())


def test_the_decision_rule_keeps_a_price_whose_gain_is_uncertain():
    # Expected elasticity 1.1 says raise (profit-maximising markup far above 10 at cost 2), but
    # the interval reaches 2.4, where raising loses: the price is kept.
    curves = DemandCurves(constant_elasticity(1.1),
                          scenarios=(constant_elasticity(0.2), constant_elasticity(2.4)))
    kept = optimize_prices(offer_frame(), curves, RULES, "test").suggestions.iloc[0]
    assert kept["suggested_price"] == kept["current_price"] == 10.0
    assert kept["explanation"].startswith("Keep web price 10.00: raising to 12.00 would gain")
    assert "includes a loss" in kept["explanation"]
    assert kept["expected_profit_gain_low"] == kept["expected_profit_gain_high"] == 0

    narrow = DemandCurves(constant_elasticity(1.1),
                          scenarios=(constant_elasticity(1.0), constant_elasticity(1.2)))
    moved = optimize_prices(offer_frame(), narrow, RULES, "test").suggestions.iloc[0]
    assert moved["suggested_price"] == 12.0
    assert 0 < moved["expected_profit_gain_low"] < moved["expected_profit_gain_high"]
    gain = moved["expected_profit_suggested"] - moved["expected_profit_current"]
    assert moved["expected_profit_gain_low"] <= gain <= moved["expected_profit_gain_high"]


def test_a_move_whose_gain_is_sure_but_too_small_keeps_its_price():
    # Elasticity 1.0 to 1.2: raising 10 -> 12 gains 0.44% to 4.1% of the profit of 80 at cost
    # 2. Above a 1% minimum gain the price is kept, and the explanation says why.
    narrow = DemandCurves(constant_elasticity(1.1),
                          scenarios=(constant_elasticity(1.0), constant_elasticity(1.2)))
    moved = optimize_prices(offer_frame(), narrow, RULES, "test").suggestions.iloc[0]
    assert moved["suggested_price"] == 12.0
    assert moved["expected_profit_gain_low"] < 0.01 * moved["expected_profit_current"]
    strict = RULES.model_copy(update={"min_gain_percent": 1.0})
    kept = optimize_prices(offer_frame(), narrow, strict, "test").suggestions.iloc[0]
    assert kept["suggested_price"] == 10.0
    assert kept["explanation"].endswith("starts below the 1% minimum gain")


def fitted_offers(elasticities: np.ndarray, rng: np.random.Generator, never_repriced: int = 1):
    """A demand model fitted on weekly web series of these elasticities, the first
    `never_repriced` never repriced, the others with price tests; their offers at 10 (unit
    cost 1), curves and the model."""
    panel = pd.concat([
        series_rows(f"i{n}", "web", elasticity, 6.0,
                    np.ones(WEEKS) if n < never_repriced else history_with_tests(rng), rng)
        for n, elasticity in enumerate(elasticities)], ignore_index=True)
    weeks = np.tile(np.arange(WEEKS), len(elasticities))
    panel = panel.assign(
        period_start=pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(weeks, unit="W"),
        age_periods=weeks + 1, reference_price=10.0,
        price=10.0 * np.exp(panel["log_price_ratio"]),
        log_reference_price=np.log(10.0), units_lag1=6.0, units_mean4=6.0, units_mean13=6.0,
        units_mean_all=6.0, sale_share=1.0, periods_since_sale=1.0, channel_trend=0.0,
        doy_sin=0.0, doy_cos=1.0, week_of_year=1.0, day_of_week=0.0)
    model = DemandModel(n_estimators=20).fit(panel)
    last = panel[weeks == WEEKS - 1].reset_index(drop=True)
    offers = last.assign(unit_cost=1.0, fee_percent=0.0, fee_fixed=0.0, current_price=10.0,
                         min_price=1.0, max_price=np.nan, observed_min_price=8.0,
                         observed_max_price=13.0, reference_price=10.0)
    return offers, demand_curves(model, offers, 80), model


def test_a_series_never_repriced_keeps_its_price_in_a_heterogeneous_group():
    rng = np.random.default_rng(5)
    offers, curves, _ = fitted_offers(rng.uniform(0.5, 3.0, 40), rng)
    never = curves.evidence.iloc[0]
    assert never["evidence_share"] == 0 and never["price_levels"] == 1
    result = optimize_prices(offers, curves, RULES, "test").suggestions
    assert result.iloc[0]["suggested_price"] == 10.0
    assert "never repriced" in result.iloc[0]["explanation"]
    assert (result["suggested_price"] != 10.0).any()  # series with evidence do move


def test_a_series_never_repriced_moves_when_its_peers_agree_unless_own_evidence_is_required():
    # Every peer is elastic (3 at 10, so profit peaks near 4.3 at unit cost 1): the pooled
    # interval of the never-repriced series is narrow enough to lower its price with
    # confidence, unless the rule asks for evidence of its own.
    offers, curves, _ = fitted_offers(np.full(40, 3.0), np.random.default_rng(7))
    assert curves.evidence.iloc[0]["evidence_share"] == 0
    assert curves.evidence.iloc[0]["elasticity_low"] > 2.0
    moved = optimize_prices(offers, curves, RULES, "test").suggestions.iloc[0]
    assert moved["suggested_price"] == 8.0  # the max change's bottom
    assert "never repriced" in moved["explanation"]
    strict = RULES.model_copy(update={"min_evidence_share": 0.2})
    kept = optimize_prices(offers, curves, strict, "test").suggestions.iloc[0]
    assert kept["suggested_price"] == 10.0
    assert "rests on less than 20% of its own evidence" in kept["explanation"]


def test_price_tests_go_to_kept_offers_within_the_rules_and_pay_for_themselves():
    # A heterogeneous group, three series never repriced: the rule keeps many prices; the
    # planned tests are on kept offers only, at allowed prices, narrow the elasticity and are
    # worth more than they cost; a longer test narrows it more.
    rng = np.random.default_rng(5)
    offers, curves, model = fitted_offers(rng.uniform(0.5, 3.0, 40), rng, never_repriced=3)
    suggestions = optimize_prices(offers, curves, RULES, "test").suggestions
    kept = set(suggestions.loc[suggestions["suggested_price"] == 10.0, "item_id"])
    plan = plan_price_tests(model, offers, suggestions, RULES)
    assert len(plan) > 0 and set(plan["item_id"]) <= kept
    assert ((plan["test_price"] >= 8.0) & (plan["test_price"] <= 12.0)).all()
    assert (plan["test_price"] != 10.0).all()
    assert (plan["elasticity_sd_after"] < plan["elasticity_sd"]).all()
    assert (plan["expected_value"] > 0).all()
    assert (plan["cost_at_confidence"] >= plan["expected_cost"]).all()
    assert np.allclose(plan["net_value"], plan["expected_value"] - plan["cost_at_confidence"])
    assert (plan["net_value"] > 0).all() and plan["net_value"].is_monotonic_decreasing
    assert plan["explanation"].str.startswith("test ").all()
    longer = plan_price_tests(model, offers, suggestions, RULES, test_days=56).merge(
        plan, on=["item_id", "test_price"], suffixes=("", "_28"))
    assert len(longer) > 0
    assert (longer["elasticity_sd_after"] < longer["elasticity_sd_after_28"]).all()
    assert len(plan_price_tests(model, offers, suggestions, RULES, max_tests=2)) == 2
    assert plan_price_tests(model, offers, suggestions, RULES, max_tests=0).empty


def test_price_tests_keep_an_items_channels_within_the_spread():
    # Two channels of each item at 10: a test alone may move one channel by up to 20%, but
    # with a 10% spread limit no item's test and other channel may be further apart.
    rng = np.random.default_rng(5)
    offers, _, model = fitted_offers(rng.uniform(0.5, 3.0, 40), rng, never_repriced=3)
    twins = pd.concat([offers, offers.assign(channel="etsy")], ignore_index=True)
    rules = RULES.model_copy(update={"max_channel_spread_percent": 10.0})
    suggestions = optimize_prices(twins, demand_curves(model, twins, 80), rules,
                                  "test").suggestions
    plan = plan_price_tests(model, twins, suggestions, rules)
    assert len(plan) > 0
    prices = suggestions.set_index(["item_id", "channel"])["suggested_price"].copy()
    prices.loc[pd.MultiIndex.from_frame(plan[["item_id", "channel"]])] = plan["test_price"].values
    spread = prices.groupby(level="item_id").agg(lambda p: p.max() / p.min() - 1)
    assert (spread <= 0.10 + 1e-9).all()


def test_plan_price_tests_names_a_bad_argument():
    rng = np.random.default_rng(5)
    offers, curves, model = fitted_offers(rng.uniform(0.5, 3.0, 12), rng)
    suggestions = optimize_prices(offers, curves, RULES, "test").suggestions
    with pytest.raises(ValueError, match="test_days"):
        plan_price_tests(model, offers, suggestions, RULES, test_days=0)
    with pytest.raises(ValueError, match="max_tests"):
        plan_price_tests(model, offers, suggestions, RULES, max_tests=-1)


def test_the_elasticity_is_read_at_the_series_latest_price():
    # Semi-log demand, elasticity 1.5 at the list price 10, raised to 12 for the last 16 weeks
    # (most weeks sold at 10): the elasticity at 12, the price a decision starts from, is 1.8.
    rng = np.random.default_rng(8)
    ratios = np.where(np.arange(WEEKS) < WEEKS - 16, 1.0, 1.2)
    rows = pd.concat([series_rows(f"i{n}", "web", 1.5, 40.0, ratios * history_with_tests(rng),
                                  rng) for n in range(60)], ignore_index=True)
    response = fit_price_response(rows, (1.0,))
    assert (response.table["reference_price"] == 12.0).all()
    assert response.table["elasticity"].mean() == pytest.approx(1.8, abs=0.15)


def test_thin_series_take_the_elasticity_their_volume_predicts():
    # The busy series (40 a week) are less elastic than the thin ones (1 a week): a prior
    # learnt from the series that inform on their own would be the busy ones' 1.0; fitted on
    # every series with their volume, a thin series never repriced gets about 2.5.
    rng = np.random.default_rng(9)
    busy = [series_rows(f"b{n}", "web", 1.0, 40.0, history_with_tests(rng), rng)
            for n in range(30)]
    thin = [series_rows(f"t{n}", "web", 2.5, 1.0, history_with_tests(rng, tests=10), rng)
            for n in range(150)]
    static = [series_rows("b-static", "web", 1.0, 40.0, np.ones(WEEKS), rng),
              series_rows("t-static", "web", 2.5, 1.0, np.ones(WEEKS), rng)]
    table = fit_price_response(pd.concat(busy + thin + static, ignore_index=True),
                               (1.0,)).table.set_index("item_id")
    assert (table.loc[["b-static", "t-static"], "evidence_share"] == 0).all()
    assert table.loc["t-static", "elasticity"] > 2.0
    assert table.loc["b-static", "elasticity"] < 1.5


def test_a_channel_of_thin_series_pools_their_evidence_into_one_elasticity():
    rng = np.random.default_rng(6)
    thin = pd.concat([series_rows(f"i{n}", "web", 2.0, 0.4, history_with_tests(rng, tests=10),
                                  rng) for n in range(300)], ignore_index=True)
    response = fit_price_response(thin, (1.0,))
    assert (response.table["evidence_share"] < 0.5).all()  # no series informs on its own
    prior = response.priors.set_index("key").loc["web"]
    assert prior["mean"] == pytest.approx(2.0, abs=0.5)
    assert response.table["elasticity"].mean() == pytest.approx(2.0, abs=0.5)


def test_a_series_never_repriced_is_as_uncertain_as_its_peers_spread():
    # Twenty busy series sit exactly on the shop's elasticity (1.0) and two hundred others
    # spread around it (sd about 0.5). A series never repriced could be any of them: its
    # interval must be about as wide as that spread, even though the busy series, which weigh
    # most in the prior's fit, hardly deviate from it.
    rng = np.random.default_rng(2)
    busy = [series_rows(f"b{n}", "web", 1.0, 60.0, history_with_tests(rng), rng)
            for n in range(20)]
    truth = np.clip(1.0 + 0.5 * rng.standard_normal(200), 0.1, 3.0)
    spread = [series_rows(f"s{n}", "web", float(e), 6.0, history_with_tests(rng, tests=10), rng)
              for n, e in enumerate(truth)]
    static = [series_rows("static", "web", 1.0, 6.0, np.ones(WEEKS), rng)]
    table = fit_price_response(pd.concat(busy + spread + static, ignore_index=True),
                               (1.0,)).table.set_index("item_id")
    assert table.loc["static", "evidence_share"] == 0
    assert 0.85 * truth.std() < table.loc["static", "elasticity_sd"] < 1.3 * truth.std()


def two_channel_rows(item: str, elasticity: float, base: float, ratios: np.ndarray,
                     season: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Weekly Poisson sales of one item on two channels whose demand also follows `season`
    (log demand, one value per week), which the base level does not know."""
    rows = []
    for channel in ("web", "etsy"):
        mean = base * np.exp(-elasticity * response_shape(np.log(ratios), 1.0) + season)
        rows.append(series_rows(item, channel, elasticity, base, ratios, rng).assign(
            units=rng.poisson(mean).astype(float)))
    return pd.concat(rows, ignore_index=True)


def test_an_items_own_season_is_not_read_as_its_price_response():
    # Every item's season departs from the base's by its own annual harmonic. Ten items
    # raised their price by 20% in mid-year just as their own season turned up: a model
    # blind to the items' seasons reads them as inelastic (about 0.5); the truth at their
    # latest price is 1.5 x 1.2 = 1.8.
    rng = np.random.default_rng(0)
    angle = 2 * np.pi * np.arange(WEEKS) / WEEKS
    peers = [two_channel_rows(f"i{n}", 1.5, 20.0, history_with_tests(rng),
                              cos * np.cos(angle) + sin * np.sin(angle), rng)
             for n, (cos, sin) in enumerate(rng.normal(0.0, 0.2, (60, 2)))]
    raised = np.where(np.arange(WEEKS) >= WEEKS // 2, 1.2, 1.0)
    targets = [two_channel_rows(f"t{n}", 1.5, 20.0, raised, -0.2 * np.sin(angle), rng)
               for n in range(10)]
    table = fit_price_response(pd.concat(peers + targets, ignore_index=True), (1.0,)).table
    estimate = table.loc[table["item_id"].str.startswith("t"), "elasticity"]
    assert estimate.mean() == pytest.approx(1.8, abs=0.4)


def test_a_few_peers_cannot_show_that_series_are_alike():
    # A dozen repriced series, truly alike (elasticity 1.5): their spread could still be
    # wide, so a series never repriced among them keeps a wide interval, not the floor's.
    widths = []
    for seed in range(1, 5):
        rng = np.random.default_rng(seed)
        peers = [series_rows(f"p{n}", "web", 1.5, 8.0, history_with_tests(rng), rng)
                 for n in range(12)]
        static = [series_rows("static", "web", 1.5, 8.0, np.ones(WEEKS), rng)]
        table = fit_price_response(pd.concat(peers + static, ignore_index=True),
                                   (1.0,)).table.set_index("item_id")
        widths.append(table.loc["static", "elasticity_sd"])
    assert np.median(widths) > 0.3
