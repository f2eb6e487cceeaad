"""apinode: turn a Python function in a Jupyter notebook into a production HTTP API.

Importing this package stays cheap and standard-library only: the IPython entry point
(`%load_ext apinode`) loads the magics lazily, and the Jupyter server extension point (the
`apinode` in `jpserver_extensions`) loads the extension lazily.
"""

__version__ = "0.1.0"


from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the apinode magics (`%load_ext apinode`)."""
    from .jupyter_ext.magics import load_magics

    load_magics(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The Jupyter server extension `apinode` (see apinode.jupyter_ext.extension)."""
    from .jupyter_ext import _jupyter_server_extension_points as points

    return points()
