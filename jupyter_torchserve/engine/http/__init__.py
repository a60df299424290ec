"""The engine's HTTP front: three ports on one event loop, each request handed to
inference/ or the registry and its answer written back."""
