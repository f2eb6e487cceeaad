"""Shared fixtures. Async tests run on pytest-jupyter's event loop (the plugin the Jupyter
extension tests need anyway)."""

pytest_plugins = ("pytest_jupyter.jupyter_core",)
