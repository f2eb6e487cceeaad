"""apinode in Jupyter: the IPython magics, the widget panel, and the Jupyter server extension."""


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The `apinode` server extension (imported only when Jupyter loads it)."""
    from .extension import ApiNodeExtension

    return [{"module": "apinode.jupyter_ext", "app": ApiNodeExtension}]
