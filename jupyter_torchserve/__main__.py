"""`python -m jupyter_torchserve start|stop|status`."""

from .cli import main

if __name__ == "__main__":
    main()
