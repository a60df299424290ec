"""Shared fixtures: pytest-jupyter's server fixtures and a real engine on free ports."""

pytest_plugins = ("pytest_jupyter.jupyter_server",)
