"""The service database's entities as pydantic models: one per entity, validating rows on
write and serving as the API's response bodies (`serving.schemas` re-exports them, so their
names, descriptions and field order are the published contract `serving/openapi.json`).

Write-side constraints (prices > 0, units, revenue and elasticity >= 0, the evidence share in
[0, 1], every number finite, texts non-empty, `bound_by` a list of known guardrail rules, an
interval's low end <= its high end) are enforced on validation and kept out of the published
schema, which stays as it was first committed; fields are only ever added to it, at the end.
"""

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

SuggestionStatus = Literal["pending", "approved", "rejected", "edited"]
"""A suggestion's review state."""
STATUSES: tuple[SuggestionStatus, ...] = get_args(SuggestionStatus)
GuardrailRule = Literal["min_margin", "min_price", "max_price", "max_change", "trust_band",
                        "stock", "channel_spread", "price_endings"]
"""A guardrail the optimizer applies (`models.pricing.optimizer.RULES`)."""
RULES_TEXT = ", ".join(get_args(GuardrailRule))

Price = Annotated[float, Field(gt=0, allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""A price: finite and > 0."""
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""Expected units or revenue: finite and >= 0."""
Profit = Annotated[float, Field(allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""Expected profit: finite, may be negative."""
Finite = Annotated[float, Field(allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""Any finite number (an interval's end)."""
Elasticity = Annotated[float, Field(ge=0, allow_inf_nan=False),
                       WithJsonSchema({"type": "number"})]
"""A price elasticity's magnitude |d ln q / d ln p|: finite and >= 0."""
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False),
                  WithJsonSchema({"type": "number"})]
"""A fraction: finite, in [0, 1]."""
Text = Annotated[str, StringConstraints(pattern=r"\S"), WithJsonSchema({"type": "string"})]
"""A string with at least one non-blank character."""


class PriceSuggestion(BaseModel):
    """One stored suggestion: an item on a channel, priced by one optimizer run (batch)."""

    id: int
    batch_id: str = Field(description="The optimizer run (suggestion batch) it belongs to")
    item_id: Text
    channel: Text
    category: Text | None = Field(description="The item's catalog category when it was priced")
    current_price: Price
    suggested_price: Price
    expected_units_current: Amount = Field(description="Expected units at the current price, "
                                                       "per decision period")
    expected_units_suggested: Amount
    expected_revenue_current: Amount
    expected_revenue_suggested: Amount
    expected_profit_current: Profit = Field(description="After channel fees and unit cost; "
                                                        "may be negative")
    expected_profit_suggested: Profit
    bound_by: list[GuardrailRule] = Field(description="The guardrails that moved the price "
                                                      "away from the unconstrained optimum; "
                                                      "empty when none did")
    explanation: Text
    model_version: Text = Field(description="The demand model version that priced the batch")
    status: SuggestionStatus
    created_at: datetime
    reviewed_at: datetime | None = Field(description="Null until the suggestion is reviewed")
    # The uncertainty of the suggestion (issue #14); null when the demand model gives none
    # (older batches too). Appended: the fields above keep their published order.
    expected_profit_gain_low: Finite | None = Field(
        description="Low end of the interval of the expected profit gain per decision period "
                    "(expected_profit_suggested - expected_profit_current is its central "
                    "value) at the confidence of the optimizer's decision rule (e.g. 90%); "
                    "may be negative; 0 when the price is kept; null when the model gives no "
                    "uncertainty")
    expected_profit_gain_high: Finite | None = Field(
        description="High end of the interval of the expected profit gain per decision "
                    "period (>= expected_profit_gain_low); 0 when the price is kept; null "
                    "when the model gives no uncertainty")
    elasticity: Elasticity | None = Field(
        description="The demand model's price elasticity |d ln q / d ln p| at the current "
                    "price (>= 0); null when the model gives none")
    elasticity_low: Finite | None = Field(
        description="Low end of the elasticity's interval (<= elasticity); null when the "
                    "model gives none")
    elasticity_high: Finite | None = Field(
        description="High end of the elasticity's interval (>= elasticity); null when the "
                    "model gives none")
    evidence_share: Share | None = Field(
        description="Share (0 to 1) of the elasticity estimate that comes from the offer's "
                    "own sales rather than its category and channel (1 - shrinkage); 0 when "
                    "the offer was never repriced; null when the model gives none")


ASSIGNED_ON_WRITE = ("id", "batch_id", "status", "created_at", "reviewed_at")
"""`PriceSuggestion` fields the store assigns (a new suggestion is `pending`, unreviewed)."""
UNCERTAINTY_FIELDS = ("expected_profit_gain_low", "expected_profit_gain_high", "elasticity",
                      "elasticity_low", "elasticity_high", "evidence_share")
"""`PriceSuggestion` fields that may be missing on write (a model without uncertainty, a
frame without the columns): missing or NaN is stored as null."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rules(value: Any) -> Any:
    """`bound_by` as the optimizer or a file gives it: missing is no rule, text is JSON."""
    if _missing(value):
        return []
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("is not a JSON list") from None
    return list(value) if hasattr(value, "__iter__") and not isinstance(value, dict) else value


def _none_if_missing(value: Any) -> Any:
    return None if _missing(value) else value


def _ordered(above: tuple[str, ...] = (), below: tuple[str, ...] = ()) -> Any:
    """A field validator: the value, when given, is >= each field of `above` and <= each field
    of `below` that is given (fields validated before it: they are in `info.data`)."""

    def check(value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        for sign, others in ((">=", above), ("<=", below)):
            for other in others:
                bound = info.data.get(other)
                if bound is not None and (value < bound if sign == ">=" else value > bound):
                    raise PydanticCustomError(
                        "interval_order", "must be {sign} field '{other}' ({bound})",
                        {"sign": sign, "other": other, "bound": bound})
        return value

    return check


_WRITTEN_FIELDS: dict[str, Any] = {
    name: (field.annotation, field) for name, field in PriceSuggestion.model_fields.items()
    if name not in (*ASSIGNED_ON_WRITE, *UNCERTAINTY_FIELDS, "bound_by", "category")}
_OPTIONAL_FIELDS: dict[str, Any] = {  # in this order: a validator sees the fields before it
    name: (Annotated[PriceSuggestion.model_fields[name].annotation,
                     BeforeValidator(_none_if_missing)], None)
    for name in UNCERTAINTY_FIELDS}
NewSuggestion = create_model(
    "NewSuggestion",
    __doc__="A suggestion as the optimizer hands it to the store: `PriceSuggestion` without "
            "the fields the store assigns, with the same types and constraints.",
    **_WRITTEN_FIELDS,
    bound_by=(Annotated[list[GuardrailRule], BeforeValidator(_rules)], ...),
    category=(Annotated[Text | None, BeforeValidator(_none_if_missing)], None),
    **_OPTIONAL_FIELDS,
    __validators__={
        "_gain_interval": field_validator("expected_profit_gain_high")(
            _ordered(above=("expected_profit_gain_low",))),
        "_elasticity_low": field_validator("elasticity_low")(_ordered(below=("elasticity",))),
        "_elasticity_high": field_validator("elasticity_high")(
            _ordered(above=("elasticity_low", "elasticity"))),
    },
)


class StatusCounts(BaseModel):
    pending: int
    approved: int
    rejected: int
    edited: int


class SkippedOffer(BaseModel):
    item_id: Text
    channel: Text
    reason: Text = Field(description="Why no price could satisfy the guardrails")


class SuggestionBatch(BaseModel):
    """One optimizer run: what it used and where its suggestions stand."""

    id: str
    created_at: datetime
    model_version: str = Field(description="The demand model version that priced the batch")
    guardrails: dict[str, Any] = Field(description="The guardrail settings the run used")
    suggestion_count: int
    skipped_count: int
    status_counts: StatusCounts = Field(description="The batch's suggestions per review status")
    skipped: list[SkippedOffer] = Field(description="Offers left unpriced, by item and channel")
