"""Offline evaluation of the recommender against honest baselines on a time split.

Everything is fitted on events before the split only: a fresh data directory receives those
events, its feature tables are built and registered, the candidate sources and the ranker are
trained on cutoffs before the split. Users seen before the split who buy in [split, until) are
scored on the items they bought. The novel-item rows score each method's list with the
user's already-bought items removed against the items they had never bought before.
"""

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from features.event_log import EventLog
from features.ingest import upsert_catalog
from features.settings import Settings
from features.store import apply_definitions, feature_store
from features.transforms import build_feature_tables
from models.recs.candidates import (
    CandidateConfig,
    FactorizationSource,
    ItemKnnSource,
    PopularSource,
    RepurchaseSource,
    purchases_before,
)
from training.recs.examples import (
    HORIZON,
    build_examples,
    fit_ranker,
    purchased_pairs,
    train_ranker,
)
from training.recs.metrics import evaluate_lists

LIST_LENGTH = 200
HALF_LIVES_DAYS = (30, 60, 120, 240)


def ranked_lists(frame: pd.DataFrame, by: str) -> dict[str, list[str]]:
    """Per user, item ids sorted by `by` descending (ties by item id)."""
    ordered = frame.sort_values(["user_id", by, "item_id"], ascending=[True, False, True])
    return ordered.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()


def fill_with(lists: dict[str, list[str]], fallback: list[str], users: list[str],
              length: int = LIST_LENGTH) -> dict[str, list[str]]:
    """Each user's list, completed with fallback items it lacks, cut to `length`."""
    filled = {}
    for user in users:
        own = lists.get(user, [])
        seen = set(own)
        filled[user] = (own + [i for i in fallback if i not in seen])[:length]
    return filled


def _repurchase_lists(history, cutoff, users, half_life, popular):
    config = CandidateConfig(half_life_days=half_life, repurchase_n=LIST_LENGTH)
    source = RepurchaseSource().fit(history, cutoff, config)
    return fill_with(ranked_lists(source.recommend(users), "score"), popular, users)


def tune_half_life(events: pd.DataFrame, split: pd.Timestamp) -> float:
    """The repurchase heuristic's half-life with the best NDCG@10 on the month before the
    split (fitted on what came before it), so the baseline is tuned as fairly as the ranker."""
    cutoff = split - HORIZON
    history = purchases_before(events, cutoff)
    truth = truth_sets(events, cutoff, split, history)
    popular = popular_items(history, cutoff)
    scores = {
        half_life: evaluate_lists(
            _repurchase_lists(history, cutoff, sorted(truth), half_life, popular), truth,
            history["item_id"].nunique())["ndcg@10"]
        for half_life in HALF_LIVES_DAYS
    }
    return max(scores, key=lambda half_life: scores[half_life])


def truth_sets(events, start, end, history) -> dict[str, set[str]]:
    """Items each user seen in `history` bought in [start, end)."""
    pairs = purchased_pairs(events, start, end)
    pairs = pairs[pairs["user_id"].isin(set(history["user_id"]))]
    return pairs.groupby("user_id")["item_id"].agg(set).to_dict()


def popular_items(history: pd.DataFrame, cutoff: pd.Timestamp) -> list[str]:
    config = CandidateConfig(popular_n=LIST_LENGTH)
    return PopularSource().fit(history, cutoff, config).ranking.index.tolist()


def baseline_lists(events: pd.DataFrame, split: pd.Timestamp, users: list[str],
                   als: FactorizationSource, popular: list[str]) -> dict[str, dict[str, list[str]]]:
    """Ranked lists of every baseline, each completed with the `popular` items; `als` is the
    candidate source fitted at the split (the baseline takes a longer list from it)."""
    history = purchases_before(events, split)
    knn = ItemKnnSource().fit(history, split, CandidateConfig(als_n=LIST_LENGTH))
    return {
        "popularity": fill_with({}, popular, users),
        "repurchase": _repurchase_lists(history, split, users,
                                        tune_half_life(events, split), popular),
        "als": fill_with(ranked_lists(als.recommend(users, LIST_LENGTH), "score"), popular,
                         users),
        "item_knn": fill_with(ranked_lists(knn.recommend(users), "score"), popular, users),
    }


def _row(name: str, lists, truth, novel_truth, bought_before, catalog_size) -> dict:
    overall = evaluate_lists(lists, truth, catalog_size)
    novel_lists = {u: [i for i in ranked if i not in bought_before.get(u, set())]
                   for u, ranked in lists.items()}
    novel = evaluate_lists(novel_lists, novel_truth, catalog_size)
    return {"name": name, "ndcg@10": overall["ndcg@10"], "recall@20": overall["recall@20"],
            "hr@10": overall["hr@10"], "coverage": overall["coverage"],
            "novel_ndcg@10": novel["ndcg@10"], "novel_recall@20": novel["recall@20"],
            "users": overall["users"], "novel_users": novel["users"]}


def evaluate_recs(events: pd.DataFrame, catalog: pd.DataFrame, split: pd.Timestamp,
                  until: pd.Timestamp, cutoffs: int = 3, extra_seeds: tuple[int, ...] = (),
                  step: Callable[[], None] = lambda: None) -> dict:
    """Fit on events before `split`, score purchases in [split, until): one row per method
    (the ranker first) plus the candidate recall. The ranker trains on `cutoffs` monthly
    cutoffs before the split; `step` is called after each of the four stages.

    `seed_runs` holds the ranker's NDCG@10 with its own seed and, refitted on the same
    examples, with each of `extra_seeds`: how much of a difference is seed noise.
    """
    before = events[events["ts"] < split]
    history = purchases_before(events, split)
    truth = truth_sets(events, split, until, history)
    users = sorted(truth)
    bought_before = history.groupby("user_id")["item_id"].agg(set).to_dict()
    novel_truth = {u: items - bought_before.get(u, set()) for u, items in truth.items()}
    catalog_size = history["item_id"].nunique()

    with tempfile.TemporaryDirectory(prefix="tailor-eval-") as workdir:
        settings = Settings(data_dir=Path(workdir), feast_project="tailor_eval")
        EventLog(settings.events_dir).append(before)
        upsert_catalog(settings.catalog_path, catalog)
        build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
        store = feature_store(settings)
        apply_definitions(store)
        step()
        ranker, examples = train_ranker(before, catalog, store, split, cutoffs)
        step()
        test = build_examples(before, catalog, store, split, users=users)
        step()
    popular = popular_items(history, split)

    def ranker_row(model) -> dict:
        scored = test.frame.assign(score=model.score(test.frame))
        lists = fill_with(ranked_lists(scored, "score"), popular, users)
        return _row("ranker", lists, truth, novel_truth, bought_before, catalog_size)

    rows = [ranker_row(ranker)]
    refits = [(seed, ranker_row(fit_ranker(examples, replace(ranker.params, random_state=seed))))
              for seed in extra_seeds]
    seed_runs = [{"seed": seed, "ndcg@10": row["ndcg@10"], "novel_ndcg@10": row["novel_ndcg@10"]}
                 for seed, row in [(ranker.params.random_state, rows[0]), *refits]]
    baselines = baseline_lists(before, split, users, test.sources["als"], popular)
    step()
    rows += [_row(name, ranked, truth, novel_truth, bought_before, catalog_size)
             for name, ranked in baselines.items()]
    proposed = test.frame[["user_id", "item_id"]]
    wanted = pd.DataFrame([(u, i) for u, items in truth.items() for i in items],
                          columns=["user_id", "item_id"])
    recall = len(wanted.merge(proposed, on=["user_id", "item_id"])) / max(len(wanted), 1)
    return {"split": split.date().isoformat(), "until": until.date().isoformat(),
            "rows": rows, "seed_runs": seed_runs, "candidate_recall": recall,
            "candidates_per_user": len(test.frame) / max(len(users), 1),
            "best_iteration": ranker.best_iteration,
            "classifier_best_iteration": ranker.classifier_best_iteration,
            "blend_weight": ranker.blend_weight}
