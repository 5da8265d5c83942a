"""The storefront's recommendations API and the merchandisers' price suggestions (FastAPI).

`create_app()` builds the app without loading anything (the OpenAPI contract is exported
from it). Its lifespan, once per worker: migrates the service database (`Settings.database`)
to the newest revision, reads the channels config (`Settings.channels_config`: approvals
are checked against it), starts tracing (`ServingSettings.trace_exporter`), then loads the
recommender (the `champion` `recs-ranker`, catalog, Feast store, item-feature cache).
`run()` serves it with uvicorn in factory mode, so every worker builds its own app.

Readiness: uvicorn accepts connections only once the lifespan's startup has finished (a
worker binds, or starts accepting on the socket its supervisor bound, after it), so no
request, `/healthz` included, reaches a worker before its recommender is loaded; a client
connecting meanwhile waits in the listen backlog. `/readyz` answers 503 while no recommender
is loaded (`loading`) or when it loaded without a model or the feature store. Loading is
not moved to the background: with several workers on one socket, a worker still loading
would take its share of the storefront's connections and have to refuse them.

The database is independent of the model: suggestions are listed with no recommender model
loaded, and recommendations keep answering while the database is down (the suggestion
endpoints answer 503 then, and migrate it once it is back).
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from db.channels import load_destinations
from features.settings import Settings, get_settings
from features.stream import open_stream
from serving import observability
from serving.auth import KeyCache
from serving.config import LogFormat, ServingSettings
from serving.deps import ServiceDatabase
from serving.middleware import RequestMiddleware
from serving.recs import Recommender
from serving.recs.served import ServedRecorder
from serving.review import pages as review
from serving.review.sessions import Sessions, load_secret
from serving.routes import channel_deliveries, events, ops, price_suggestions, recommendations

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"
DESCRIPTION = """\
Recommendations for the storefront: a LightGBM ranker over candidate items, with a
popularity fallback whenever the ranker cannot answer (unknown user, missing features, no
model loaded). A well-formed recommendations request always gets 200.

Price suggestions for merchandisers: the optimizer's stored batches, read from the service
database (they need no recommender model; 503 while the database is unreachable), reviewed
over this API or on the review page at `/review` (not part of this schema).

Events: the storefront sends behaviour as it happens (`POST /v1/events`, up to 1,000 per
request); they are in the event stream when the answer is 202, and in the log and the online
features a moment later (the stream consumer, `tailor events consume`).

Channel deliveries: every approved price goes to its sales channel through a delivery queue,
retried with backoff; `/v1/channel-deliveries` lists where each stands (`status=failed`: the
dead letters, with the reason) and puts a dead letter back in the queue (`/retry`).

Every route but `/healthz`, `/readyz`, `/metrics` (Prometheus, not in this schema) and this
schema needs an API key, sent as `Authorization: Bearer <key>`: `storefront` keys read
recommendations and send events, `merchandiser` keys review prices, `admin` keys may call
every route. 401: no key, or an unknown or revoked one; 403: the key's role does not grant
the route. Keys are made with `tailor keys create`.

Every response carries an `X-Request-ID` header; on recommendations it equals the body's
`request_id`.
"""


def create_app(settings: Settings | None = None,
               options: ServingSettings | None = None) -> FastAPI:
    """The API; the database is migrated and models load when it starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        if config.database_url is None:  # the embedded SQLite file lives in the data dir
            config.data_dir.mkdir(parents=True, exist_ok=True)
        database = ServiceDatabase(config.database)
        try:
            await anyio.to_thread.run_sync(database.ensure_schema)
        except DBAPIError as exc:  # recommendations do not need it: start anyway
            logger.error("the service database is unavailable at startup; price suggestions "
                         "answer 503 until it is back: %s", exc)
        app.state.database = database
        app.state.destinations = (load_destinations(config.channels_config)
                                  if config.channels_config else None)
        app.state.stream = open_stream(config)
        served = ServedRecorder(app.state.stream).start()
        app.state.served = served
        serving_options = options or ServingSettings()
        secret = serving_options.session_secret
        app.state.sessions = Sessions(load_secret(
            config.data_dir, secret.get_secret_value() if secret else None))
        observability.set_metrics(serving_options.metrics)
        observability.start_tracing(observability.span_exporter(serving_options.trace_exporter))
        try:
            recommender = Recommender(config, serving_options)
            await anyio.to_thread.run_sync(recommender.load)
            app.state.recommender = recommender
            observability.record_model_version(recommender.status().model_version)
            yield
        finally:
            await anyio.to_thread.run_sync(served.close)
            app.state.stream.close()
            database.dispose()
            observability.worker_exit()

    app = FastAPI(title="tailor recommendations", version=API_VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.keys = KeyCache()
    app.add_middleware(RequestMiddleware)
    app.include_router(ops.router)
    app.include_router(recommendations.router)
    app.include_router(events.router)
    app.include_router(ops.admin)
    app.include_router(price_suggestions.router)
    app.include_router(price_suggestions.decisions)
    app.include_router(channel_deliveries.router)
    review.install(app)
    return app


WORKER_HEALTHCHECK_S = 60
"""How long uvicorn's supervisor waits for a worker to answer its ping before replacing it
(uvicorn: 5 s). A spawned worker answers only once it has imported `tailor`'s command line
again (its `__main__`), which takes longer than 5 s on a busy machine."""


def run(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, *,
        log_format: LogFormat = "text", timeout_keep_alive: int = 5,
        timeout_graceful_shutdown: int = 20, access_log: bool = True) -> None:
    """Serve with uvicorn (uvloop, httptools); each worker builds its app (and loads its model)
    itself. Several workers share their metrics through `PROMETHEUS_MULTIPROC_DIR` (a
    temporary one when unset). On SIGTERM or Ctrl-C: no new connections, requests in flight
    get `timeout_graceful_shutdown` seconds, then each worker's lifespan shuts down."""
    with observability.run_metrics_dir(workers):
        uvicorn.run("serving.app:create_app", factory=True, host=host, port=port,
                    workers=workers, loop="uvloop", http="httptools",
                    log_config=observability.log_config(log_format), access_log=access_log,
                    timeout_keep_alive=timeout_keep_alive,
                    timeout_graceful_shutdown=timeout_graceful_shutdown,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
