"""LightGBM fits in this process or on a Dask cluster (`lightgbm.dask`), one model either way.

`fit` takes a scikit-learn LightGBM estimator (its parameters are set in one place, by its
caller) and fits it on `Rows`, early stopping on validation rows when given. With a scheduler
address it fits the estimator's Dask twin, same parameters, on that cluster: the rows are dealt
to the workers by whole queries (a ranker's query never spans two workers), and the fitted
model comes back as the local estimator (`to_local()`), booster and all.

What the cluster lacks is early stopping. `lightgbm.dask` does not support it (its fit
documentation calls callbacks untested; early stopping there is an open feature request), and
each LightGBM worker would evaluate only the validation rows it holds, so the workers could
stop at different rounds and break the training. So the cluster fits all `n_estimators`
rounds, and the number of trees is picked afterwards, here, on all the validation rows, by the
rule of `lightgbm.early_stopping` (the best round so far, given up after `stopping_rounds`
rounds without a strict improvement) on the metric LightGBM evaluates for the objective
(`validation_scores`: NDCG@k, binary log-loss, Poisson). The booster keeps every round and
predicts, saves and registers the best one's trees, as after early stopping.
"""

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import lightgbm as lgb
import numpy as np
import pandas as pd

Model = TypeVar("Model", bound=lgb.LGBMModel)
DASK_MODELS: dict[type, type] = {
    lgb.LGBMRanker: lgb.DaskLGBMRanker,
    lgb.LGBMClassifier: lgb.DaskLGBMClassifier,
    lgb.LGBMRegressor: lgb.DaskLGBMRegressor,
}
EPSILON = 1e-15  # LightGBM's floor of a probability in the binary log-loss
POISSON_FLOOR = 1e-10  # and of the expected value in the Poisson metric


@dataclass(frozen=True)
class Rows:
    """Rows to fit or validate on: features, labels, a ranker's query sizes (rows sorted by
    query) and a raw-score offset (`init_score`)."""

    X: pd.DataFrame
    y: Any  # one label per row: a Series or an array
    group: np.ndarray | None = None
    init_score: np.ndarray | None = None

    def extras(self, prefix: str = "") -> dict[str, Any]:
        """The group and init score as `fit` arguments (`eval_` ones: in lists)."""
        found = {name: value for name, value in
                 (("group", self.group), ("init_score", self.init_score)) if value is not None}
        if prefix:
            return {f"{prefix}{name}": [value] for name, value in found.items()}
        return found


def fit(model: Model, train: Rows, valid: Rows | None = None, *, stopping_rounds: int = 50,
        scheduler: str | None = None, **fit_args) -> Model:
    """`model` fitted on `train`; with `valid`, its number of trees picked there by early
    stopping (`stopping_rounds`; a ranker's NDCG at `eval_at`). In this process, or on the
    Dask cluster of `scheduler` (`tcp://host:port`). `fit_args` go to the estimator's fit."""
    if scheduler is not None:
        return _fit_on_cluster(model, train, valid, scheduler, stopping_rounds, **fit_args)
    args = {**fit_args, **train.extras()}
    if valid is not None:
        args.update(eval_X=(valid.X,), eval_y=(valid.y,), **valid.extras("eval_"),
                    callbacks=[lgb.early_stopping(stopping_rounds, verbose=False)])
    return model.fit(train.X, train.y, **args)


def _fit_on_cluster(model: Model, train: Rows, valid: Rows | None, scheduler: str,
                    stopping_rounds: int, eval_at: Iterable[int] = (10,), **fit_args) -> Model:
    from distributed import Client  # imported here: serving never needs it

    with Client(scheduler) as client, warnings.catch_warnings():
        # Each worker trains on its own threads: lightgbm.dask sets them, says so and goes on.
        warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored")
        twin = DASK_MODELS[type(model)](client=client, **model.get_params())
        data = _dealt(client, train)
        twin.fit(data.pop("X"), data.pop("y"), **data, **fit_args)
        local = twin.to_local()
    if valid is not None:
        scores = validation_scores(local.booster_, valid, local.objective_, next(iter(eval_at)))
        best = early_stopping_round(scores, local.objective_ == "lambdarank", stopping_rounds)
        # What LGBMModel.fit records after early stopping: predictions and saved models then
        # use the best round's trees.
        local.booster_.best_iteration = best
        local._best_iteration = best
    return local


def _dealt(client, rows: Rows) -> dict[str, Any]:
    """`rows` as Dask collections (`X`, `y`, and `group`, `init_score` when set) of one
    partition per worker, held by that worker: whole queries (rows, without a group) dealt
    in turn, so that each worker's share looks like the whole."""
    import dask.dataframe as dd

    workers = list(client.nthreads())
    sizes = rows.group if rows.group is not None else np.ones(len(rows.X), dtype=int)
    parts = min(len(workers), len(sizes))
    part_of_row = np.repeat(np.arange(len(sizes)) % parts, sizes)
    whole = {"X": rows.X, "y": pd.Series(np.asarray(rows.y)),
             **{name: pd.Series(np.asarray(value)) for name, value in rows.extras().items()}}
    held: dict[str, list] = {name: [] for name in whole}
    for part in range(parts):
        pieces = [value.iloc[part::parts] if name == "group" else value[part_of_row == part]
                  for name, value in whole.items()]
        futures = client.scatter(pieces, workers=[workers[part]], hash=False)
        for name, future in zip(whole, futures, strict=True):
            held[name].append(future)
    return {name: dd.from_delayed(held[name], meta=value.iloc[:0])
            for name, value in whole.items()}


def validation_scores(booster: lgb.Booster, valid: Rows, objective: str,
                      eval_at: int = 10) -> Iterator[float]:
    """The validation metric after each boosting round of `booster`, as LightGBM computes it
    for `objective` while training: NDCG@`eval_at` (lambdarank), binary log-loss, or the
    Poisson negative log-likelihood."""
    metric = validation_metric(objective, valid, eval_at)
    features = valid.X.to_numpy(dtype=float)
    raw = np.zeros(len(features))
    if valid.init_score is not None:
        raw += np.asarray(valid.init_score, dtype=float)
    for round_ in range(booster.current_iteration()):
        raw += booster.predict(features, raw_score=True, start_iteration=round_,
                               num_iteration=1)
        yield metric(raw)


def validation_metric(objective: str, valid: Rows,
                      eval_at: int = 10) -> Callable[[np.ndarray], float]:
    """The metric LightGBM evaluates `valid` with for `objective`, as a function of the raw
    scores (`validation_scores`)."""
    labels = np.asarray(valid.y, dtype=float)
    if objective == "lambdarank" and valid.group is not None:
        return _ndcg(labels, valid.group, eval_at)
    if objective == "binary":
        return partial(_binary_logloss, labels > 0)
    if objective == "poisson":
        return partial(_poisson, labels)
    raise ValueError(f"no validation metric for objective {objective!r} on a Dask cluster")


def _binary_logloss(positive: np.ndarray, raw: np.ndarray) -> float:
    probability = 1 / (1 + np.exp(-raw))
    chance = np.where(positive, probability, 1 - probability)
    return float(np.mean(-np.log(np.maximum(chance, EPSILON))))


def _poisson(labels: np.ndarray, raw: np.ndarray) -> float:
    expected = np.maximum(np.exp(raw), POISSON_FLOOR)
    return float(np.mean(expected - labels * np.log(expected)))


def _ndcg(labels: np.ndarray, group: np.ndarray, k: int) -> Callable[[np.ndarray], float]:
    """Mean NDCG@k over the queries as LightGBM's `ndcg` metric: gain 2^label - 1, ties in
    score kept in row order, a query without a positive label scoring 1."""
    query = np.repeat(np.arange(len(group)), group)
    start = np.r_[0, np.cumsum(group)[:-1]]
    gain = 2.0 ** labels - 1

    def dcg(order: np.ndarray) -> np.ndarray:
        position = np.arange(len(order)) - start[query[order]]
        weights = np.where(position < k, gain[order] / np.log2(position + 2), 0.0)
        return np.bincount(query[order], weights=weights, minlength=len(group))

    ideal = dcg(np.lexsort((-gain, query)))
    scored = ideal > 0

    def ndcg(raw: np.ndarray) -> float:
        found = dcg(np.lexsort((-raw, query)))
        return float(np.mean(np.where(scored, found / np.where(scored, ideal, 1.0), 1.0)))

    return ndcg


def early_stopping_round(scores: Iterable[float], higher_is_better: bool,
                         stopping_rounds: int) -> int:
    """The round `lightgbm.early_stopping` keeps: the best so far (strictly better), once
    `stopping_rounds` rounds have not improved on it or the rounds ran out."""
    best_round, best = 0, None
    for round_, score in enumerate(scores, start=1):
        if best is None or (score > best if higher_is_better else score < best):
            best_round, best = round_, score
        elif round_ - best_round >= stopping_rounds:
            break
    return best_round
