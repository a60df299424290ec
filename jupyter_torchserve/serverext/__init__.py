"""jupyter_server extension: the engine's APIs under `{base_url}/torchserve/`, with Jupyter's auth.

Remote users (JupyterHub, Binder) reach only the Jupyter port, so the sidebar and curl go
through here; the engine's management token stays in this process.

Options (`jupyter_server_config.py`)::

    c.JupyterTorchServe.start_options = {"workers": 2}   # passed to launcher.start_engine
    c.JupyterTorchServe.request_timeout = 120.0          # seconds per forwarded call
    c.EngineConfig.max_request_size = 12345              # any engine option, for its start
"""

from __future__ import annotations

from typing import Any

from ..config import engine_values
from .gateway import Gateway
from .handlers import route_table


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Mount the routes and create the one `Gateway` they share."""
    section = serverapp.config.get("JupyterTorchServe", {})
    gateway = Gateway(
        request_timeout=float(section.get("request_timeout", 120.0)),
        # the EngineConfig of jupyter_server_config.py, for an engine started from here
        start_options={**engine_values(serverapp.config), **section.get("start_options", {})},
        log=serverapp.log,
    )
    web_app = serverapp.web_app
    web_app.settings["jupyter_torchserve_gateway"] = gateway
    web_app.add_handlers(".*$", route_table(web_app.settings["base_url"]))
    serverapp.log.info(
        "jupyter_torchserve: routes mounted under %storchserve/", web_app.settings["base_url"]
    )


# older jupyter_server / notebook name
load_jupyter_server_extension = _load_jupyter_server_extension
