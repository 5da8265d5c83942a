"""A Redis online store that stops answering (the process frozen: connections accepted by
the kernel, nothing answered): requests run on the event loop, so each store call is bounded
by `STORE_TIMEOUT_SECONDS`, and after `BREAKER.failure_threshold` failed answers the
popularity fallback answers alone, at once, until a trial after `open_seconds` finds the
store back. The champion is the one `tests.test_serving` trains on the four-month slice."""

import signal
import time

from db.channels import BreakerSettings
from features.store import feature_store, materialize
from serving.channels.breaker import CircuitBreaker
from serving.channels.clock import SystemClock
from serving.config import ServingSettings
from serving.recs import Recommender
from serving.recs.recommender import BREAKER
from serving.recs.snapshot import STORE_TIMEOUT_SECONDS
from tests import test_serving
from tests.test_serving import END

trained = test_serving.trained


def test_a_frozen_store_costs_bounded_waits_then_none_until_it_is_back(trained, private_redis):
    settings = trained.settings.model_copy(update={"redis_url": private_redis.url})
    materialize(feature_store(settings), END)
    recommender = Recommender(settings, ServingSettings(clock="model"))
    recommender.load()
    ranking = recommender._current().ranking
    assert ranking is not None
    users = [user for user in ranking.candidates.users if user != trained.user][:6]
    assert not recommender.recommend(trained.user, 5).fallback
    recommender.breaker = CircuitBreaker(
        BreakerSettings(failure_threshold=BREAKER.failure_threshold,
                        slow_call_seconds=BREAKER.slow_call_seconds, open_seconds=2.0),
        SystemClock())

    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)
    try:
        waits = []
        for user in users:
            started = time.monotonic()
            answer = recommender.recommend(user, 5)
            waits.append(time.monotonic() - started)
            assert answer.fallback and len(answer.items) == 5
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    tried, skipped = waits[:BREAKER.failure_threshold], waits[BREAKER.failure_threshold:]

    assert recommender.breaker.state == "open"
    assert min(tried) >= STORE_TIMEOUT_SECONDS * 0.9  # each waited for a timeout...
    assert max(tried) < STORE_TIMEOUT_SECONDS * 4  # ...a bounded number of them
    assert max(skipped) < 0.05  # the store is not tried while the breaker is open
    time.sleep(2.1)
    assert not recommender.recommend(users[0], 5).fallback  # the trial finds it back
    assert recommender.breaker.state == "closed"
