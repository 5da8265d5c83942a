"""The per-user result cache: entries last their TTL at most, belong to one item-feature
generation, and an invalidation beats an answer computed before it."""

import time

import numpy as np

from serving.recs.caches import RankedList, ResultCache


def ranked(generation: int = 0) -> RankedList:
    return RankedList(True, {"item_id": np.array(["a"], dtype=object)}, generation)


def test_an_entry_is_served_until_its_ttl_and_never_after():
    cache = ResultCache(capacity=10, ttl=0.2)
    entry = ranked()
    cache.put("u", entry, time.monotonic())
    assert cache.get("u", 0) is entry
    time.sleep(0.25)
    assert cache.get("u", 0) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_an_entry_of_an_older_generation_is_out_of_date():
    cache = ResultCache(capacity=10, ttl=60)
    cache.put("u", ranked(generation=1), time.monotonic())
    assert cache.get("u", 2) is None


def test_an_answer_computed_before_an_invalidation_is_not_kept():
    cache = ResultCache(capacity=10, ttl=60)
    started = time.monotonic()
    cache.invalidate(["u"])  # the user's purchase arrives while the answer is computed
    cache.put("u", ranked(), started)
    assert cache.get("u", 0) is None

    cache.put("u", ranked(), time.monotonic())  # computed after it: kept
    assert cache.get("u", 0) is not None
    cache.invalidate(["u"])
    assert cache.get("u", 0) is None


def test_clear_drops_everything_and_refuses_answers_started_before_it():
    cache = ResultCache(capacity=10, ttl=60)
    cache.put("u", ranked(), time.monotonic())
    started = time.monotonic()
    cache.clear()
    cache.put("v", ranked(), started)
    assert cache.get("u", 0) is None and cache.get("v", 0) is None


def test_the_least_recently_used_users_go_first():
    cache = ResultCache(capacity=2, ttl=60)
    for user in ("a", "b"):
        cache.put(user, ranked(), time.monotonic())
    cache.get("a", 0)
    cache.put("c", ranked(), time.monotonic())
    assert cache.get("b", 0) is None
    assert cache.get("a", 0) is not None and cache.get("c", 0) is not None
