"""The API's response bodies: the contract `serving/openapi.json` publishes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import UUID4, BaseModel, ConfigDict, Field

Source = Literal["repurchase", "covisit", "als", "next_order", "popular"]
FeatureStoreKind = Literal["sqlite", "redis"]
SuggestionStatus = Literal["pending", "approved", "rejected", "edited"]
"""A suggestion's review state (`models.suggestions.STATUSES`)."""
GuardrailRule = Literal["min_margin", "min_price", "max_price", "max_change", "trust_band",
                        "channel_spread", "price_endings"]
"""A guardrail the optimizer applies (`models.optimizer.RULES`)."""


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float = Field(description="Ranker score on the personalised path, popularity "
                                     "(distinct recent buyers) on the fallback; higher first")
    source: Source = Field(description="The candidate source that proposed the item with "
                                       "the best rank")


class Recommendations(BaseModel):
    request_id: UUID4 = Field(description="Also sent as the `X-Request-ID` header")
    model_version: str | None = Field(description="Registered `recs-ranker` version that "
                                                  "answered; null when no model is loaded")
    items: list[RecommendedItem] = Field(description="At most `k` items, best first")
    fallback: bool = Field(description="True when the answer is the popularity fallback "
                                       "(unknown user, no features, no model)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    feature_store: FeatureStoreKind
    items: int = Field(description="Catalog items the service can recommend")
    item_features_until: datetime | None = Field(
        description="End of the materialization the cached item features were read after "
                    "(null when the registry records none)")


class NotReady(BaseModel):
    status: Literal["unavailable"] = "unavailable"
    reason: str
    model_version: str | None
    feature_store: FeatureStoreKind


class ReloadResult(BaseModel):
    previous_version: str | None
    current_version: str | None
    changed: bool = Field(description="Whether a different version is now being served")


class Problem(BaseModel):
    detail: str


class PriceSuggestion(BaseModel):
    """One stored suggestion: an item on a channel, priced by one optimizer run (batch)."""

    id: int
    batch_id: str = Field(description="The optimizer run (suggestion batch) it belongs to")
    item_id: str
    channel: str
    category: str | None = Field(description="The item's catalog category when it was priced")
    current_price: float
    suggested_price: float
    expected_units_current: float = Field(description="Expected units at the current price, "
                                                      "per decision period")
    expected_units_suggested: float
    expected_revenue_current: float
    expected_revenue_suggested: float
    expected_profit_current: float = Field(description="After channel fees and unit cost; "
                                                       "may be negative")
    expected_profit_suggested: float
    bound_by: list[GuardrailRule] = Field(description="The guardrails that moved the price "
                                                      "away from the unconstrained optimum; "
                                                      "empty when none did")
    explanation: str
    model_version: str = Field(description="The demand model version that priced the batch")
    status: SuggestionStatus
    created_at: datetime
    reviewed_at: datetime | None = Field(description="Null until the suggestion is reviewed")


class PriceSuggestionPage(BaseModel):
    items: list[PriceSuggestion] = Field(description="Newest batch first, then by item and "
                                                     "channel")
    total: int = Field(description="Suggestions matching the filters, on every page")
    limit: int
    offset: int


class StatusCounts(BaseModel):
    pending: int
    approved: int
    rejected: int
    edited: int


class SkippedOffer(BaseModel):
    item_id: str
    channel: str
    reason: str = Field(description="Why no price could satisfy the guardrails")


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
