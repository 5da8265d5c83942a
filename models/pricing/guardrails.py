"""The shop's pricing rules (guardrails) that every price suggestion must satisfy.

`Guardrails` holds the shop-wide rules; `load_guardrails` reads them from a YAML file (see
`guardrails.example.yaml` at the repository root, which documents every field). The per-item
bounds `min_price` and `max_price` come from the catalog, not from here. Percentages are plain
numbers: 10 means 10%. `reprice_on_stock` says when a stock change asks for new suggestions
(`training.pricing.stock`).
"""

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from features.errors import InputError
from features.yaml_files import load_yaml_model


def _whole_cents(value: float) -> float:
    cents = round(value * 100)
    if abs(value * 100 - cents) > 1e-6:
        raise ValueError("must be a whole number of cents")
    return cents / 100


Percent = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Ending = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), AfterValidator(_whole_cents)]
Step = Annotated[float, Field(ge=0.01, allow_inf_nan=False), AfterValidator(_whole_cents)]


class StockThreshold(BaseModel):
    """How far an item's stock on hand must move from the stock its prices were last suggested
    with for a targeted suggestion run; the defaults are those of `guardrails.example.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    change_percent: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 25.0
    """The smallest move that counts, as a share of the stock the prices were suggested with."""

    change_units: Annotated[int, Field(ge=1)] = 3
    """The smallest move that counts, in units (both must be met). A move to or from zero
    stock always counts."""

    def moved(self, priced_with: int | None, stock: int) -> bool:
        """Whether `stock` is far enough from `priced_with` (None: no price was suggested with
        a known stock yet) to suggest the item's prices again."""
        if priced_with is None or (priced_with == 0) != (stock == 0):
            return True
        change = abs(stock - priced_with)
        return change >= self.change_units and change * 100 >= self.change_percent * priced_with


class Guardrails(BaseModel):
    """The shop-wide pricing rules; the defaults are those of `guardrails.example.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_margin_percent: Percent = 10.0
    """Profit per unit after channel fees is at least this share of the unit cost: prices are at
    or above the floor `p` solving `p * (1 - fee_percent/100) - fee_fixed = unit_cost * (1 +
    min_margin_percent/100)`. Unknown unit costs count as 0 (the floor then covers the fees)."""

    max_change_percent: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 20.0
    """`|suggested / current - 1| <= max_change_percent / 100`."""

    price_endings: tuple[Ending, ...] = (0.49, 0.99)
    """Allowed cent endings: prices are `k + e` for whole `k` and an ending `e` in [0, 1). Empty:
    any multiple of `price_step` (and the current price) is allowed."""

    max_channel_spread_percent: Percent = 20.0
    """Across one item's channels, `max(price) / min(price) - 1 <= max_channel_spread_percent /
    100`."""

    trust_band_percent: Percent = 10.0
    """Prices stay within `[low * (1 - t/100), high * (1 + t/100)]`, low and high the lowest and
    highest of the prices observed for the item x channel and its current price: the demand
    model is not believed far from its data, and keeping the current price is never out of
    the band."""

    price_step: Step = 0.01
    """Spacing of the candidate prices when `price_endings` is empty (whole cents, >= 0.01)."""

    confidence_percent: Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)] = 80.0
    """A price moves only when its expected profit gain stays positive over this two-sided
    confidence interval of the demand model's price response (80: the gain's lower bound at
    90%); otherwise the current price is kept. 0 moves on the expected gain alone."""

    min_gain_percent: Percent = 0.25
    """A price moves (unless a rule forces it) only when the lower end of its profit gain's
    confidence interval is above this share of the current price's expected profit: a
    price is not changed for a gain too small to be sure of."""

    min_evidence_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    """A price moves (unless a rule forces it) only when at least this share of its price
    response comes from its own sales (the rest is pooled from its channel, category, peers
    and the item's other channels). 0: the confidence interval alone decides, and it is wide
    where the pooled evidence says little about the series."""

    restock_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 28.0
    """Stock on hand must last this many days (an item's catalog `restock_days` overrides it).
    An item whose stock sells out sooner at its current prices is scarce: none of its prices
    goes down, and the units any price can sell are capped by the stock."""

    overstock_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0
    """An item whose stock lasts longer than this at its current prices is overstocked: its
    units are costed at `overstock_cost_share` of their unit cost (the rest is sunk), which
    favours prices that clear it. The min margin floor still uses the full unit cost."""

    overstock_cost_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5
    """The share of the unit cost an overstocked unit still costs (in [0, 1])."""

    reprice_on_stock: StockThreshold = StockThreshold()
    """When the stock the channels report moved far enough for a targeted suggestion run."""

    @model_validator(mode="after")
    def _overstock_beyond_restock(self) -> "Guardrails":
        if self.overstock_days <= self.restock_days:
            raise ValueError("overstock_days must be greater than restock_days")
        return self

    @field_validator("price_endings")
    @classmethod
    def _sorted_unique(cls, endings: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted(set(endings)))

    def on_grid(self, prices, current) -> np.ndarray:
        """Per price (arrays, or scalars), whether it is one a suggestion may take: whole cents
        with an allowed ending; when no endings are set, any multiple of `price_step` and the
        current price."""
        prices = np.asarray(prices, dtype=float)
        cents = np.round(prices * 100)
        whole_cents = np.abs(prices * 100 - cents) < 1e-6
        if self.price_endings:
            endings = [round(ending * 100) for ending in self.price_endings]
            return whole_cents & np.isin(cents % 100, endings)
        step = round(self.price_step * 100)
        return (whole_cents & (cents % step == 0)) | (np.abs(prices - current) < 1e-9)

    def margin_floor(self, unit_cost, fee_percent, fee_fixed) -> np.ndarray:
        """The lowest price meeting `min_margin_percent` (arrays; a NaN unit cost counts as 0)."""
        cost = np.nan_to_num(np.asarray(unit_cost, dtype=float), nan=0.0)
        fee_share = np.asarray(fee_percent, dtype=float) / 100
        required = cost * (1 + self.min_margin_percent / 100) + np.asarray(fee_fixed, dtype=float)
        return required / (1 - fee_share)


class GuardrailsError(InputError):
    """A guardrails file that is not valid YAML or breaks the `Guardrails` schema."""


def load_guardrails(path: str | Path) -> Guardrails:
    """Read and validate a guardrails YAML file; errors name the file and every bad field."""
    return load_yaml_model(path, Guardrails, "guardrails", GuardrailsError)
