"""What the engine's forkserver imports before it forks any worker.

`import torch` builds about 170,000 long-lived Python objects, and none of them is garbage.
Two things follow, both measured on this 2-core machine kind:

- Collecting while they are built is wasted work: the import runs with the cyclic garbage
  collector off, about 0.2 s faster (1.50 s against 1.71 s, median of 8 runs each).
- In a forked worker, a full collection walks every one of those objects and writes to each
  one's GC header. That copies the parent's heap pages into the child (about 9,000 page
  faults, 35 MB) and took 113-138 ms. The first such collection used to land in a worker's
  first batch. `gc.freeze()` moves them to the permanent generation, so no worker's
  collector looks at them again; the same full collection then took about 1 ms and 27
  faults. This is the pattern the `gc.freeze` documentation gives for a pre-fork server.

The frozen objects are the forkserver's modules, which live as long as it does, so
freezing them leaks nothing.
"""

import gc

gc.disable()
try:
    from . import worker_main  # noqa: F401  (torch and our handler runtime, for every fork)
finally:
    gc.freeze()
    gc.enable()
