"""Top-k ranking metrics over users: NDCG@k, Recall@k, HR@k and catalogue coverage."""

import math
from collections.abc import Mapping, Sequence


def ndcg_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary-relevance NDCG@k: DCG of the list over the DCG of a perfect list."""
    gains = sum(1 / math.log2(rank + 2) for rank, item in enumerate(recommended[:k])
                if item in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return gains / ideal if ideal else 0.0


def recall_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant items found in the first k."""
    return len(relevant.intersection(recommended[:k])) / len(relevant) if relevant else 0.0


def hit_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """1 if any of the first k is relevant."""
    return float(any(item in relevant for item in recommended[:k]))


def evaluate_lists(lists: Mapping[str, Sequence[str]], truth: Mapping[str, set[str]],
                   catalog_size: int) -> dict[str, float]:
    """Mean NDCG@10, Recall@20 and HR@10 over the users of `truth` (a missing list counts
    as empty), and the share of the catalogue that appears in some top 10."""
    users = [user for user, relevant in truth.items() if relevant]
    if not users:
        return {"ndcg@10": 0.0, "recall@20": 0.0, "hr@10": 0.0, "coverage": 0.0, "users": 0}
    shown: set[str] = set()
    totals = {"ndcg@10": 0.0, "recall@20": 0.0, "hr@10": 0.0}
    for user in users:
        ranked, relevant = list(lists.get(user, [])), truth[user]
        totals["ndcg@10"] += ndcg_at_k(ranked, relevant, 10)
        totals["recall@20"] += recall_at_k(ranked, relevant, 20)
        totals["hr@10"] += hit_at_k(ranked, relevant, 10)
        shown.update(ranked[:10])
    metrics = {name: total / len(users) for name, total in totals.items()}
    metrics["coverage"] = len(shown) / catalog_size if catalog_size else 0.0
    metrics["users"] = len(users)
    return metrics
