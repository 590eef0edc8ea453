"""The HTTP API of ``python -m serve http`` as a Ray Serve application, for clusters of machines.

    serve run serve.cluster:app models=models/en-de/onnx,models/de-en/onnx        # Ray's own CLI
    serve deploy serve/cluster.yaml                                                # to a running cluster

Each replica runs exactly the FastAPI app of :func:`serve.api.create_app` (same routes, validation, limits, errors
and dynamic batcher), built on each replica; Ray Serve spreads replicas over the cluster's
nodes, routes requests to them and restarts the ones that die. Bundle paths must exist on every node (the same
path, or a ``runtime_env`` that carries them). Needs ``pip install "attention-mt[cluster]"`` (Ray); nothing else
in the project imports Ray.

Ray Serve's proxies prefer a replica on their own node, so traffic through one entry would stay on one node: start
every node with ``RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0`` (``PROXY_ENV``; ``serve/rayservice.yaml`` sets it)
and any proxy routes to every replica. Each answer names the node that served it (``x-served-by``).
"""

from __future__ import annotations

import ray
from ray import serve as ray_serve  # Ray's package; ours is `serve`

from .api import BatchSettings, Limits, create_app, load_bundles

# Set where each node starts (``ray start``, or the pods' env in KubeRay): any proxy routes to every node's replicas.
PROXY_ENV = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}


@ray_serve.deployment(name="translation", ray_actor_options={"num_cpus": 1})
@ray_serve.ingress()  # the app is built on the replica, after __init__, by __serve_build_asgi_app__
class TranslationReplica:
    """One replica: the FastAPI app of :func:`serve.api.create_app`, whose lifespan loads the bundles once."""

    def __init__(self, models: list[str], threads: int, workers: int, batching: BatchSettings) -> None:
        self.models, self.threads, self.workers, self.batching = models, threads, workers, batching

    def __serve_build_asgi_app__(self):
        app = create_app(load_bundles(self.models, threads=self.threads, workers=self.workers), Limits(),
                         self.batching)
        node = ray.util.get_node_ip_address()

        @app.middleware("http")
        async def served_by(request, call_next):  # which node answered: how load spreads, seen from a client
            response = await call_next(request)
            response.headers["x-served-by"] = node
            return response

        return app


def app(args: dict) -> "ray_serve.Application":
    """Ray Serve application builder: ``models`` (comma-separated bundle folders, required), ``threads`` (1),
    ``workers`` (search workers per replica, 1), ``max_batch_size`` (32), ``max_wait_ms`` (2), ``max_queue``
    (1024). Replicas, ``num_cpus`` and autoscaling come from Ray's deployment options (see serve/cluster.yaml)."""
    models = [model for model in str(args.get("models", "")).split(",") if model]
    if not models:
        raise ValueError("give models=BUNDLE[,BUNDLE...] (exported bundle folders, the same path on every node)")
    batching = BatchSettings(max_batch_size=int(args.get("max_batch_size", 32)),
                             max_wait_ms=float(args.get("max_wait_ms", 2.0)), max_queue=int(args.get("max_queue", 1024)))
    return TranslationReplica.bind(models, int(args.get("threads", 1)), int(args.get("workers", 1)), batching)
