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

SuggestionStatus = Literal["pending", "approved", "rejected", "edited", "superseded"]
"""A suggestion's review state: `pending` until decided; `approved` at the suggested price,
`edited` (approved at a merchandiser's price) or `rejected`; `superseded` when a newer batch
priced the same item x channel while it was still pending."""
STATUSES: tuple[SuggestionStatus, ...] = get_args(SuggestionStatus)
GuardrailRule = Literal["min_margin", "min_price", "max_price", "max_change", "trust_band",
                        "stock", "channel_spread", "price_endings"]
"""A guardrail the optimizer applies (`models.pricing.optimizer.RULES`)."""
RULES_TEXT = ", ".join(get_args(GuardrailRule))
Role = Literal["storefront", "merchandiser", "admin"]
"""An API key's role: `storefront` reads recommendations and sends events, `merchandiser`
reviews prices, `admin` may do everything (reload, retrain, manage keys)."""
ROLES: tuple[Role, ...] = get_args(Role)
DecisionAction = Literal["approved", "rejected", "edited", "superseded"]
"""What a decision did to a pending suggestion."""

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
                    "own sales rather than the prior (its channel and category, moved by its "
                    "relative price, its volume and the item's other channels; 1 - "
                    "shrinkage); 0 when the offer was never repriced; null when the model "
                    "gives none")
    # The review (revision 0003). Appended: the fields above keep their published order.
    price_floor: Price | None = Field(
        default=None, description="The lowest price the guardrails allowed when the batch was "
                                  "made (an edited price is checked against it); null on "
                                  "batches made before bounds were stored")
    price_floor_rule: GuardrailRule | None = Field(
        default=None, description="The guardrail that sets price_floor")
    price_ceiling: Price | None = Field(
        default=None, description="The highest price the guardrails allowed when the batch was "
                                  "made; null on batches made before bounds were stored")
    price_ceiling_rule: GuardrailRule | None = Field(
        default=None, description="The guardrail that sets price_ceiling")
    approved_price: Price | None = Field(
        default=None, description="The price approved: the suggested price, or the "
                                  "merchandiser's edit; null until approved")
    reviewed_by: str | None = Field(
        default=None, description="Who decided: an API key's name, `policy` (the approval "
                                  "policy) or `system` (superseded by a newer batch)")


ASSIGNED_ON_WRITE = ("id", "batch_id", "status", "created_at", "reviewed_at", "approved_price",
                     "reviewed_by")
"""`PriceSuggestion` fields the store assigns (a new suggestion is `pending`, unreviewed)."""
UNCERTAINTY_FIELDS = ("expected_profit_gain_low", "expected_profit_gain_high", "elasticity",
                      "elasticity_low", "elasticity_high", "evidence_share")
"""`PriceSuggestion` fields that may be missing on write (a model without uncertainty, a
frame without the columns): missing or NaN is stored as null."""
BOUND_FIELDS = ("price_floor", "price_floor_rule", "price_ceiling", "price_ceiling_rule")
"""`PriceSuggestion` fields of the guardrail bounds: missing or NaN is stored as null."""


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
    if name not in (*ASSIGNED_ON_WRITE, *UNCERTAINTY_FIELDS, *BOUND_FIELDS, "bound_by",
                    "category")}
_OPTIONAL_FIELDS: dict[str, Any] = {  # in this order: a validator sees the fields before it
    name: (Annotated[PriceSuggestion.model_fields[name].annotation,
                     BeforeValidator(_none_if_missing)], None)
    for name in (*UNCERTAINTY_FIELDS, *BOUND_FIELDS)}
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
        "_ceiling": field_validator("price_ceiling")(_ordered(above=("price_floor",))),
    },
)


class StatusCounts(BaseModel):
    pending: int
    approved: int
    rejected: int
    edited: int
    superseded: int = 0


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


class SuggestionDecision(BaseModel):
    """One entry of the review's audit log: a decision on a suggestion."""

    id: int
    suggestion_id: int
    batch_id: str
    item_id: str
    channel: str
    action: DecisionAction
    actor: str = Field(description="An API key's name, `policy` (the approval policy) or "
                                   "`system` (superseded by a newer batch)")
    decided_at: datetime
    status_before: SuggestionStatus
    status_after: SuggestionStatus
    price_before: float = Field(description="The suggested price the decision was on")
    price_after: float | None = Field(description="The price approved; null when rejected or "
                                                  "superseded")
    reason: str | None = Field(description="Why, when given (always for a rejection)")


DeliveryStatus = Literal["pending", "delivered", "failed", "superseded"]
"""Where an approved price stands on its way to its channel: `pending` until the channel
confirms it (retried with backoff meanwhile), `delivered`, `failed` (a dead letter: the retry
budget ran out or the channel refused the change; `last_error` says why; a merchandiser may
retry it) or `superseded` (a newer approval for the same item x channel came first)."""
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)


class ChannelDelivery(BaseModel):
    """One approved price on its way to a sales channel (the transactional outbox)."""

    id: int
    suggestion_id: int = Field(description="The approved price suggestion")
    item_id: str
    channel: str
    price: float = Field(description="The approved price to set on the channel")
    approved_by: str = Field(description="Who approved: an API key's name or `policy`")
    approved_at: datetime
    status: DeliveryStatus
    attempts: int = Field(description="Delivery attempts so far")
    next_attempt_at: datetime = Field(description="Not retried before this time")
    last_error: str | None = Field(description="Why the last attempt failed; null if none did")
    delivered_at: datetime | None = Field(description="When the channel confirmed the price")
    updated_at: datetime
    retried_by: str | None = Field(default=None, description="Who last put this dead letter "
                                                             "back in the queue, if anyone")
    retried_at: datetime | None = Field(default=None, description="When they did")
