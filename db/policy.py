"""The approval policy: suggestions inside a low-risk envelope are approved automatically.

Off unless a policy file is given (`approval_policy.example.yaml` at the repository root
documents every field). A suggestion is approved by the policy when it moves the price by a
small enough step in an allowed direction, its expected profit gain is confidently positive
(the low end of its interval above `min_gain_low`: a suggestion without an interval never
qualifies, nor does one that keeps the price) and its item, category and channel are not
excluded. Everything else waits for a person. The policy runs when a batch is stored, in the
batch's transaction (`db.reviews.approve_by_policy`), and each approval is written to the audit
log with the actor `policy`.
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from db.tables import PriceSuggestionRow
from features.errors import InputError
from features.yaml_files import load_yaml_model

POLICY = "policy"
"""The actor of the policy's approvals in the audit log."""
Direction = Literal["up", "down"]


class ApprovalPolicy(BaseModel):
    """The low-risk envelope of automatic approval; the defaults are those of
    `approval_policy.example.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_change_percent: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 5.0
    """`|suggested / current - 1| <= max_change_percent / 100`."""

    min_gain_low: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """The expected profit gain's low end must be above this (per decision period)."""

    directions: tuple[Direction, ...] = ("up", "down")
    """The directions of price moves the policy may approve."""

    exclude_items: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_channels: frozenset[str] = frozenset()

    def approves(self, row: PriceSuggestionRow) -> str | None:
        """Why the policy approves the suggestion (the audit log's reason), None when it
        waits for a person."""
        change = row.suggested_price / row.current_price - 1
        gain_low = row.expected_profit_gain_low
        direction = "up" if change > 0 else "down"
        if (change == 0 or abs(change) * 100 > self.max_change_percent + 1e-9
                or direction not in self.directions
                or gain_low is None or gain_low <= self.min_gain_low
                or row.item_id in self.exclude_items or row.channel in self.exclude_channels
                or (row.category is not None and row.category in self.exclude_categories)):
            return None
        return (f"approval policy: price {change:+.1%} (within ±{self.max_change_percent:g}%), "
                f"expected profit gain at least {gain_low:.2f} per period "
                f"(above {self.min_gain_low:g})")


class ApprovalPolicyError(InputError):
    """An approval policy file that is not valid YAML or breaks the `ApprovalPolicy` schema."""


def load_approval_policy(path: str | Path) -> ApprovalPolicy:
    """Read and validate an approval policy YAML file; errors name the file and every bad
    field."""
    return load_yaml_model(path, ApprovalPolicy, "approval policy", ApprovalPolicyError)

