"""`python -m jupyter_torchserve start|stop|status`."""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["start"] and "--foreground" in sys.argv[2:]:
    # The forkserver's `import torch` is most of a cold start. Begin it before our own
    # imports (traitlets, tornado: ~0.15 s), not after them; the launcher and the benchmarks
    # start the engine this way.
    from .engine import forkserver

    forkserver.warm_in_background()

from .cli import main  # noqa: E402

if __name__ == "__main__":
    main()
