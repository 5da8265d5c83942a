import time

import numpy as np
import pandas as pd
import pytest

from features.online_retail import convert_online_retail
from features.scale import DEFAULT_MAX_SHIFT, scale_events
from training.stages import StageTimer


@pytest.fixture
def events(online_retail_rows) -> pd.DataFrame:
    events, _, _ = convert_online_retail(pd.DataFrame(online_retail_rows))
    return events


def test_scale_events_is_deterministic_whatever_the_row_order(events):
    scaled = scale_events(events, 3)
    again = scale_events(events.sample(frac=1, random_state=7), 3)

    pd.testing.assert_frame_equal(scaled, again)
    assert not scaled.equals(scale_events(events, 3, seed=1))
    pd.testing.assert_frame_equal(scale_events(events, 1), events.sort_values(
        ["ts", "event_id"], ignore_index=True))


def test_scale_events_clones_each_customer_with_new_ids_and_one_earlier_shift(events):
    scaled = scale_events(events, 4)

    assert len(scaled) == 4 * len(events) and scaled["event_id"].is_unique
    assert (scaled.dtypes == events.dtypes).all()
    assert scaled["ts"].max() == events["ts"].max()  # the log's end, hence cutoffs, stay
    assert scaled["user_id"].nunique() == 4 * events["user_id"].nunique()
    assert scaled["user_id"].isna().sum() == 4 * events["user_id"].isna().sum()  # guests
    original = events.set_index("event_id")
    for copy in (1, 3):
        clone = scaled[scaled["event_id"].str.endswith(f"~{copy}")]
        source = original.loc[clone["event_id"].str.removesuffix(f"~{copy}")]
        for column in ("event_type", "item_id", "quantity", "unit_price"):
            assert clone[column].tolist() == source[column].tolist()
        assert (clone["session_id"] == source["session_id"].to_numpy() + f"~{copy}").all()
        known = source["user_id"].notna().to_numpy()
        assert (clone["user_id"].to_numpy()[known]
                == source["user_id"].to_numpy()[known] + f"~{copy}").all()
        # One shift per customer (a guest's order is one), back by less than the maximum:
        # orders, baskets and the gaps between a customer's orders are kept.
        shift = pd.Series(source["ts"].to_numpy() - clone["ts"].to_numpy(),
                          index=clone.index)
        customer = source["user_id"].fillna(source["session_id"]).to_numpy()
        per_customer = shift.groupby(customer).agg(["min", "max"])
        assert (per_customer["min"] == per_customer["max"]).all()
        assert (shift >= pd.Timedelta(0)).all() and (shift < DEFAULT_MAX_SHIFT).all()
        assert per_customer["min"].nunique() > len(per_customer) / 2  # customers spread


def test_scale_events_refuses_a_factor_below_one(events):
    with pytest.raises(ValueError, match="at least 1"):
        scale_events(events, 0)


def test_stage_timer_adds_up_repeated_stages_and_sees_their_peak_memory():
    calls = []
    timer = StageTimer(on_stage=lambda: calls.append(1))
    for _ in range(2):
        with timer.stage("sleep"):
            time.sleep(0.1)
    with timer.stage("allocate"):
        block = np.ones(400 * 2**20 // 8)  # 400 MB, touched
        time.sleep(0.1)
        del block

    metrics = timer.metrics()
    assert len(calls) == 3
    assert 0.2 <= metrics["stage_sleep_seconds"] < 1.0
    assert metrics["stage_allocate_peak_rss_mb"] >= metrics["stage_sleep_peak_rss_mb"] + 350
    assert set(metrics) == {f"stage_{name}_{kind}" for name in ("sleep", "allocate")
                            for kind in ("seconds", "peak_rss_mb")}
