import filecmp

import pandas as pd
import pytest

from features.event_log import EventLog
from features.ingest import import_online_retail
from features.online_retail import category_for, convert_online_retail
from tests.conftest import write_csv

RAW_HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
              "CustomerID", "Country"]


def raw(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame([[str(v) for v in row] for row in rows], columns=RAW_HEADER)


def test_convert_online_retail_applies_each_rule():
    frame = raw(
        ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "2010-12-01 08:26:00",
         2.55, "17850", "United Kingdom"),
        ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2, "2010-12-01 08:26:00",
         2.55, "17850", "United Kingdom"),
        ("C536379", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", -1, "2011-06-01 09:41:00",
         2.95, "14527", "United Kingdom"),
        ("536380", "22961", "JAM MAKING SET PRINTED", 24, "2010-12-01 09:41:00", 1.45, "",
         "United Kingdom"),
        ("536381", "POST", "POSTAGE", 1, "2010-12-01 09:41:00", 18.0, "12583", "France"),
        ("536382", "22139", "", 5, "2010-12-01 09:45:00", 0, "", "United Kingdom"),
        ("536383", "22140", "DAMAGED", -10, "2010-12-01 09:45:00", 1.0, "", "United Kingdom"),
        ("A563185", "B", "Adjust bad debt", 1, "2011-08-12 14:50:00", 11062.06, "", "UK"),
        ("536384", "22141", "BAD DATE", 1, "yesterday", 1.0, "", "United Kingdom"),
    )
    events, catalog, report = convert_online_retail(frame)

    assert report.rows_read == 9
    assert report.events_by_type == {"purchase": 3, "return": 1}
    assert report.rejected == {
        "service stock code (postage, fee, discount, voucher)": 1,
        "not a sale or cancellation invoice": 1,
        "non-positive UnitPrice": 1,
        "sale line with non-positive Quantity": 1,
        "unreadable InvoiceDate": 1,
    }
    assert events["event_id"].tolist() == [
        "or-536365-85123A-0", "or-536365-85123A-1", "or-C536379-85123A-0", "or-536380-22961-0",
    ]
    assert events["event_type"].tolist() == ["purchase", "purchase", "return", "purchase"]
    assert events["quantity"].tolist() == [6, 2, 1, 24]
    assert events["user_id"].tolist() == ["17850", "17850", "14527", None]
    assert events["session_id"].tolist() == ["536365", "536365", "C536379", "536380"]
    # UK winter time equals UTC; summer time (BST) is an hour ahead of it.
    assert events["ts"].iloc[0] == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    assert events["ts"].iloc[2] == pd.Timestamp("2011-06-01 08:41:00", tz="UTC")

    by_item = catalog.set_index("item_id")
    assert sorted(by_item.index) == ["22961", "85123A"]
    assert by_item.loc["85123A", "current_price"] == 2.55  # the refund is not a sale price
    assert by_item.loc["85123A", "category"] == "lighting"
    assert by_item.loc["22961", "category"] == "kitchen"


@pytest.mark.parametrize(
    ("description", "category"),
    [
        ("PAPER CHAIN KIT 50'S CHRISTMAS", "christmas"),
        ("JUMBO BAG RED RETROSPOT", "bags"),
        ("SET OF 3 CAKE TINS PANTRY DESIGN", "kitchen"),
        ("PACK OF 72 RETROSPOT CAKE CASES", "kitchen"),
        ("ASSORTED COLOUR BIRD ORNAMENT", "garden"),
        ("INFLATABLE POLITICAL GLOBE", "other"),
        ("", "other"),
    ],
)
def test_category_for_takes_the_first_matching_rule(description, category):
    assert category_for(description) == category


def test_import_online_retail_counts_a_real_slice_exactly(tmp_path, online_retail_slice):
    # Expected counts were taken with Python's csv module over the same 20,000 rows.
    result = import_online_retail(online_retail_slice, tmp_path / "data")

    assert result.report.rows_read == 20_000
    assert result.report.events_by_type == {"purchase": 19_529, "return": 245}
    assert result.report.rejected == {
        "non-positive UnitPrice": 137,
        "service stock code (postage, fee, discount, voucher)": 89,
    }
    events = EventLog(tmp_path / "data" / "events").read()
    assert len(events) == result.appended.written == 19_774
    assert events["user_id"].isna().sum() == 6_487
    assert events["ts"].min() == pd.Timestamp("2010-12-01 08:26:00", tz="UTC")
    catalog = pd.read_parquet(tmp_path / "data" / "catalog.parquet")
    assert result.catalog_items == len(catalog) == events["item_id"].nunique()


def test_import_online_retail_is_deterministic_and_idempotent(tmp_path, online_retail_slice):
    first = import_online_retail(online_retail_slice, tmp_path / "a")
    import_online_retail(online_retail_slice, tmp_path / "b")
    again = import_online_retail(online_retail_slice, tmp_path / "a")

    assert again.appended.written == 0
    assert again.appended.duplicates == first.appended.written
    comparison = filecmp.dircmp(tmp_path / "a" / "events", tmp_path / "b" / "events")
    assert comparison.subdirs and not comparison.diff_files
    for sub in comparison.subdirs.values():
        assert sub.left_list == sub.right_list and not sub.diff_files
    assert filecmp.cmp(tmp_path / "a" / "catalog.parquet", tmp_path / "b" / "catalog.parquet",
                       shallow=False)


def test_import_online_retail_accepts_later_overlapping_exports(tmp_path, online_retail_rows):
    early = [r for r in online_retail_rows if r["InvoiceDate"] < "2010-12-06"]
    late = [r for r in online_retail_rows if r["InvoiceDate"] >= "2010-12-03"]
    whole = write_csv(tmp_path / "whole.csv", online_retail_rows)
    import_online_retail(whole, tmp_path / "whole")
    import_online_retail(write_csv(tmp_path / "early.csv", early), tmp_path / "parts")
    second = import_online_retail(write_csv(tmp_path / "late.csv", late), tmp_path / "parts")

    assert second.appended.duplicates > 0
    parts = EventLog(tmp_path / "parts" / "events").read()
    expected = EventLog(tmp_path / "whole" / "events").read()
    pd.testing.assert_frame_equal(parts, expected)


def test_import_online_retail_rejects_a_file_of_another_format(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("order,sku\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        import_online_retail(path, tmp_path / "data")
    assert not (tmp_path / "data" / "events").exists()
