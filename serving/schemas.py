"""The API's response bodies: the contract `serving/openapi.json` publishes.

The service database's entities (`PriceSuggestion`, `SuggestionBatch`, `StatusCounts`,
`SkippedOffer`, `ChannelDelivery` and their literals) are `db.schemas`' models, re-exported
here: the same model validates a row on write and is the body served.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    UUID4,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from db.schemas import (
    ChannelDelivery,
    DeliveryStatus,
    GuardrailRule,
    PriceSuggestion,
    SkippedOffer,
    StatusCounts,
    SuggestionBatch,
    SuggestionDecision,
    SuggestionStatus,
)
from features.schemas import BLANK, NOT_BLANK

__all__ = [
    "Approval",
    "BulkDecision",
    "BulkResult",
    "ChannelDelivery",
    "ChannelDeliveryPage",
    "DecisionPage",
    "DeliveryStatus",
    "DeliveryStatusFilter",
    "EditRefusal",
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
    "StatusFilter",
    "SuggestionBatch",
    "SuggestionDecision",
    "SuggestionStatus",
]

Source = Literal["repurchase", "covisit", "als", "next_order", "popular"]
"""The candidate source that proposed an item (`popular`: the fallback or a top-up)."""
FeatureStoreKind = Literal["sqlite", "redis", "redis_cluster"]
StatusFilter = Literal["pending", "approved", "rejected", "edited", "superseded", "any"]
"""The review status to list: one `SuggestionStatus`, or `any`."""
DeliveryStatusFilter = Literal["pending", "delivered", "failed", "superseded", "any"]
"""The delivery status to list: one `DeliveryStatus`, or `any`."""
MAX_ID = 2**63 - 1
"""The largest id (and offset) the service database stores: a signed 64-bit integer."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank_string", "must have a non-blank character")
    return value


Reason = Annotated[str, AfterValidator(_not_blank),
                   Field(max_length=2000, json_schema_extra={"pattern": NOT_BLANK})]
"""A reason a request must give: at most 2,000 characters, at least one non-blank."""
Note = Annotated[str | None, Field(max_length=2000)]
"""An optional note for the audit log."""


def _json_number(value: object) -> object:
    """A number of the body as JSON has it: pydantic would also take `true` as 1 and "2" as 2."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("number_type", "Input should be a JSON number")
    return value


RequestPrice = Annotated[float, Field(gt=0, allow_inf_nan=False),
                         BeforeValidator(_json_number)]
"""A price sent in a request: finite and > 0 (the published schema says so, unlike the
response's `Price`, whose schema stays as first published)."""
RequestId = Annotated[int, BeforeValidator(_json_number)]
"""An id sent in a request body."""


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float = Field(description="Ranker score on the personalised path, popularity "
                                     "(distinct recent buyers) on the fallback; higher first")
    source: Source = Field(description="The candidate source that proposed the item with "
                                       "the best rank")


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events appended to the event stream")


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

    reason: Note = Field(default=None, description="An optional note for the audit log")


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="Why the suggestion is rejected")


class PriceEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: RequestPrice = Field(description="The price to approve instead of the suggested "
                                            "one; it must keep every guardrail of the "
                                            "suggestion's batch")
    reason: Note = Field(default=None, description="An optional note for the audit log")


BULK_FILTERS = ("channel", "category", "batch_id")


def _bulk_rules(schema: dict[str, Any]) -> None:
    """`BulkDecision`'s rules across fields, in its published schema: a rejection gives a
    non-blank reason; the body gives `ids` and no filter (null or blank), or no `ids` and at
    least one non-blank filter."""
    not_blank = {"type": "string", "pattern": NOT_BLANK}
    no_filter = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": BLANK}]}
    schema["allOf"] = [
        {"anyOf": [{"properties": {"action": {"const": "approve"}}},
                   {"properties": {"action": {"const": "reject"}, "reason": not_blank},
                    "required": ["reason"]}]},
        {"anyOf": [{"properties": {"ids": {"type": "array"},
                                   **{name: no_filter for name in BULK_FILTERS}},
                    "required": ["ids"]},
                   {"properties": {"ids": {"type": "null"}},
                    "anyOf": [{"properties": {name: not_blank}, "required": [name]}
                              for name in BULK_FILTERS]}]},
    ]


class BulkDecision(BaseModel):
    """Approve or reject many pending suggestions at once: the listed `ids` (all must be
    pending, or nothing is decided), or every pending suggestion matching the filters (at
    least one filter; blank ones are no filter). Rejecting needs a reason."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_bulk_rules)

    action: Literal["approve", "reject"]
    ids: list[RequestId] | None = Field(default=None, description="Suggestion ids; without "
                                                                  "them, the filters choose")
    channel: str | None = None
    category: str | None = None
    batch_id: str | None = None
    reason: Note = Field(default=None, description="Required to reject (not blank); a note "
                                                   "when approving")

    def filters(self) -> dict[str, str | None]:
        """The filters given: blank ones are None."""
        return {name: value if value and value.strip() else None
                for name in BULK_FILTERS for value in [getattr(self, name)]}

    @model_validator(mode="after")
    def _ids_or_filters_and_a_reason_to_reject(self) -> Self:
        if self.action == "reject" and not (self.reason or "").strip():
            raise PydanticCustomError("reason_required",
                                      "field 'reason' is required to reject suggestions")
        given = any(self.filters().values())
        if self.ids is None and not given:
            raise PydanticCustomError("ids_or_filters", "give 'ids' or at least one filter "
                                                        "(channel, category, batch_id)")
        if self.ids is not None and given:
            raise PydanticCustomError("ids_or_filters",
                                      "give either 'ids' or filters, not both")
        return self


class BulkResult(BaseModel):
    action: Literal["approve", "reject"]
    decided: int = Field(description="How many suggestions this request decided")
    ids: list[int] = Field(description="Their ids, ascending")


class GuardrailProblem(BaseModel):
    detail: str
    rule: GuardrailRule | None = Field(description="The guardrail the edited price breaks; "
                                                   "null when the bounds are unknown")


RequestProblem = Annotated[dict[str, Any],
                           WithJsonSchema({"$ref": "#/components/schemas/HTTPValidationError"})]
"""FastAPI's own body for a request that breaks the schema (`HTTPValidationError`, among the
schema's components as every route with parameters may answer it)."""
EditRefusal = GuardrailProblem | RequestProblem
"""An edit's 422: the price breaks a guardrail, or the request breaks the schema."""


class DecisionPage(BaseModel):
    items: list[SuggestionDecision] = Field(description="Newest first")
    total: int = Field(description="Entries matching the filters, on every page")
    limit: int
    offset: int


class ChannelDeliveryPage(BaseModel):
    items: list[ChannelDelivery] = Field(description="Newest first")
    total: int = Field(description="Deliveries matching the filters, on every page")
    limit: int
    offset: int
