"""The API's response bodies: the contract `serving/openapi.json` publishes.

The service database's entities (`PriceSuggestion`, `SuggestionBatch`, `StatusCounts`,
`SkippedOffer` and their literals) are `db.schemas`' models, re-exported here: the same
model validates a row on write and is the body served.
"""

from datetime import datetime
from typing import Literal

from pydantic import UUID4, BaseModel, ConfigDict, Field

from db.schemas import (
    GuardrailRule,
    Price,
    PriceSuggestion,
    SkippedOffer,
    StatusCounts,
    SuggestionBatch,
    SuggestionDecision,
    SuggestionStatus,
    Text,
)

__all__ = [
    "Approval",
    "BulkDecision",
    "BulkResult",
    "DecisionPage",
    "FeatureStoreKind",
    "GuardrailProblem",
    "GuardrailRule",
    "Health",
    "NotReady",
    "PriceEdit",
    "PriceSuggestion",
    "PriceSuggestionPage",
    "Problem",
    "Readiness",
    "Recommendations",
    "RecommendedItem",
    "Rejection",
    "ReloadResult",
    "SkippedOffer",
    "Source",
    "StatusCounts",
    "SuggestionBatch",
    "SuggestionDecision",
    "SuggestionStatus",
]

Source = Literal["repurchase", "covisit", "als", "next_order", "popular"]
"""The candidate source that proposed an item (`popular`: the fallback or a top-up)."""
FeatureStoreKind = Literal["sqlite", "redis"]


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


class PriceSuggestionPage(BaseModel):
    items: list[PriceSuggestion] = Field(description="Newest batch first, then by item and "
                                                     "channel")
    total: int = Field(description="Suggestions matching the filters, on every page")
    limit: int
    offset: int


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000,
                               description="An optional note for the audit log")


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(max_length=2000, description="Why the suggestion is rejected")


class PriceEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: Price = Field(description="The price to approve instead of the suggested one; it "
                                     "must keep every guardrail of the suggestion's batch")
    reason: str | None = Field(default=None, max_length=2000,
                               description="An optional note for the audit log")


class BulkDecision(BaseModel):
    """Approve or reject many pending suggestions at once: the listed `ids` (all must be
    pending, or nothing is decided), or every pending suggestion matching the filters (at
    least one filter)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject"]
    ids: list[int] | None = Field(default=None, description="Suggestion ids; without them, "
                                                            "the filters choose")
    channel: str | None = None
    category: str | None = None
    batch_id: str | None = None
    reason: str | None = Field(default=None, max_length=2000,
                               description="Required to reject; a note when approving")


class BulkResult(BaseModel):
    action: Literal["approve", "reject"]
    decided: int = Field(description="How many suggestions this request decided")
    ids: list[int] = Field(description="Their ids, ascending")


class GuardrailProblem(BaseModel):
    detail: str
    rule: GuardrailRule | None = Field(description="The guardrail the edited price breaks; "
                                                   "null when the bounds are unknown")


class DecisionPage(BaseModel):
    items: list[SuggestionDecision] = Field(description="Newest first")
    total: int = Field(description="Entries matching the filters, on every page")
    limit: int
    offset: int
