"""What the engine's forkserver imports before it forks any worker.

`import torch` builds about 170,000 long-lived Python objects, and none of them is garbage.
Two things follow (measured in docs/performance.md, "`gc.freeze()` in the forkserver"):

- Collecting while they are built is wasted work: the import runs with the cyclic garbage
  collector off, which makes it faster.
- In a forked worker, a full collection walks every one of those objects and writes to each
  one's GC header. That copies the parent's heap pages into the child, costs a large share of
  a batch's time, and the first such collection used to land in a worker's first batch.
  `gc.freeze()` moves them to the permanent generation, so no worker's collector looks at
  them again. This is the pattern the `gc.freeze` documentation gives for a pre-fork server.

The frozen objects are the forkserver's modules, which live as long as it does, so
freezing them leaks nothing.
"""

import gc

gc.disable()
try:
    import torch  # noqa: F401  (preloaded on purpose: forks inherit the imported module)

    from . import worker_main  # noqa: F401  (our handler runtime, for every fork)
finally:
    gc.freeze()
    gc.enable()
