"""jupyter_server extension: the engine's APIs under `{base_url}/torchserve/`, with Jupyter's auth.

Remote users (JupyterHub, Binder) reach only the Jupyter port, so the sidebar and curl go
through here; the engine's management token stays in this process.

Options (`jupyter_server_config.py`)::

    c.JupyterTorchServe.start_options = {"workers": 2}   # passed to launcher.start_engine
    c.JupyterTorchServe.request_timeout = 120.0          # seconds per forwarded call
    c.EngineConfig.max_request_size = 12345              # any engine option, for its start
    c.JupyterTorchServe.dashboard_interval = 5.0         # seconds between dashboard samples
"""

from __future__ import annotations

from typing import Any

from ..config import engine_values
from .dashboard_handlers import dashboard_routes
from .gateway import Gateway
from .handlers import route_table
from .history import History
from .sampler import Sampler


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Mount the routes, create the one `Gateway` they share, and start the dashboard's
    sampler on the server's loop (so the history fills before anyone opens the dashboard)."""
    section = serverapp.config.get("JupyterTorchServe", {})
    gateway = Gateway(
        request_timeout=float(section.get("request_timeout", 120.0)),
        # the EngineConfig of jupyter_server_config.py, for an engine started from here
        start_options={**engine_values(serverapp.config), **section.get("start_options", {})},
        log=serverapp.log,
    )
    web_app = serverapp.web_app
    web_app.settings["jupyter_torchserve_gateway"] = gateway
    history = History(interval=float(section.get("dashboard_interval", 5.0)))
    sampler = Sampler(gateway, history, log=serverapp.log)
    web_app.settings["jupyter_torchserve_history"] = history
    web_app.settings["jupyter_torchserve_sampler"] = sampler
    base_url = web_app.settings["base_url"]
    # the dashboard's routes first: `models/{m}/loadtest` would otherwise read as a version
    web_app.add_handlers(".*$", dashboard_routes(base_url) + route_table(base_url))
    serverapp.io_loop.add_callback(sampler.start)
    serverapp.log.info(
        "jupyter_torchserve: routes mounted under %storchserve/", web_app.settings["base_url"]
    )


# older jupyter_server / notebook name
load_jupyter_server_extension = _load_jupyter_server_extension
