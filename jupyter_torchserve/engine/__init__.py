"""The serving engine: a process of its own, plus the worker processes it forks.

Which process runs what, by layer (each imports only the layers below it):

- `app.py`: the engine process's start and stop (listeners, discovery file, restore).
- `http/`: the HTTP front, on the engine's event loop: http1.py (the inference port's
  server), routes.py (the route tables), fastpath.py and the Tornado handlers.
- `inference/`: what an inference call does, apart from its transport: TorchServe's
  predictions and KServe v1/v2, called by both HTTP paths and the gRPC servicers (`grpc/`).
- `registry.py`, `registration.py`, `snapshot.py`, `model.py`, `v2_schema.py`: model
  versions, their queues and batching, what they answer over v2, and the management
  operations; `metrics.py`, `keys.py`, `store.py`.
- `download.py`, `urls.py`, `params.py`, `limits.py`, `jsonbody.py`: what outside input may
  do (register URLs, numbers, caps, JSON bodies); `statelock.py`, `tmpdirs.py`: one engine
  per state dir, and what a dead engine left behind.
- `pool.py`, `workers.py`, `deaths.py`, `protocol.py`, `busypoll.py`, `gpu.py`: the engine's
  side of the worker processes.
- `forkserver.py` starts the forkserver, which imports `worker_preload.py`; each worker it
  forks runs `worker_main.py` (with `protocol.SyncConnection` and `busypoll.PollWindow`).
"""
