"""The service database's entities as pydantic models: one per entity, validating rows on
write and serving as the API's response bodies (`serving.schemas` re-exports them, so their
names, descriptions and field order are the published contract `serving/openapi.json`).

Write-side constraints (prices > 0, units and revenue >= 0, every number finite, texts
non-empty, `bound_by` a list of known guardrail rules) are enforced on validation and kept
out of the published schema, which stays as it was first committed.
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
    WithJsonSchema,
    create_model,
)

SuggestionStatus = Literal["pending", "approved", "rejected", "edited"]
"""A suggestion's review state."""
STATUSES: tuple[SuggestionStatus, ...] = get_args(SuggestionStatus)
GuardrailRule = Literal["min_margin", "min_price", "max_price", "max_change", "trust_band",
                        "channel_spread", "price_endings"]
"""A guardrail the optimizer applies (`models.pricing.optimizer.RULES`)."""
RULES_TEXT = ", ".join(get_args(GuardrailRule))

Price = Annotated[float, Field(gt=0, allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""A price: finite and > 0."""
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""Expected units or revenue: finite and >= 0."""
Profit = Annotated[float, Field(allow_inf_nan=False), WithJsonSchema({"type": "number"})]
"""Expected profit: finite, may be negative."""
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


ASSIGNED_ON_WRITE = ("id", "batch_id", "status", "created_at", "reviewed_at")
"""`PriceSuggestion` fields the store assigns (a new suggestion is `pending`, unreviewed)."""


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


_WRITTEN_FIELDS: dict[str, Any] = {
    name: (field.annotation, field) for name, field in PriceSuggestion.model_fields.items()
    if name not in (*ASSIGNED_ON_WRITE, "bound_by", "category")}
NewSuggestion = create_model(
    "NewSuggestion",
    __doc__="A suggestion as the optimizer hands it to the store: `PriceSuggestion` without "
            "the fields the store assigns, with the same types and constraints.",
    **_WRITTEN_FIELDS,
    bound_by=(Annotated[list[GuardrailRule], BeforeValidator(_rules)], ...),
    category=(Annotated[Text | None, BeforeValidator(lambda v: None if _missing(v) else v)],
              None),
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
