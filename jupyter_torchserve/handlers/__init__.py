"""Handler runtime used by the workers and the archive pre-flight.

* ``service``: ``load_service`` / ``Service.predict`` (docs/architecture.md §2), with
  TorchServe 0.12's entry-point rules.
* ``context`` / ``metrics``: a TorchServe-compatible ``Context`` with a real metrics cache.
* ``builtin/``: standalone built-in handlers (copied into archives as ``jts_<name>.py``).
* ``_ts_compat/`` + ``compat``: ``ts.*`` names for TorchServe-era handlers, used only when
  the real ``torchserve`` package is absent.
* ``requirements``: per-model ``pip install --target`` of an archive's requirements.

Nothing is imported here, so the engine can use ``handlers.requirements`` without torch.
"""
