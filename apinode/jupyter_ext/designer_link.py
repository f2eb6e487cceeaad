"""The API designer's address for this kernel's notebook, as `%api_dev` shows it.

The kernel learns its Jupyter server's URL, base URL and root directory from the server's own
runtime file (apinode.jupyter_ext.devclient.jupyter_server_info), and its notebook from
`JPY_SESSION_NAME`, which jupyter_server sets for a kernel it starts for a notebook: the
notebook's path on disk (or its path relative to the root when the session has no name). A
kernel without it (started by nbclient, a console, a notebook outside the root) gets the
designer's address without a notebook, and the designer asks for one.

Text shows the absolute URL; HTML links to the base URL's path, so that the browser resolves it
against the page it shows, which stays right behind a proxy (JupyterHub) that serves Jupyter
under another host than the one Jupyter knows.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DESIGNER = "apinode/designer"


@dataclass(frozen=True)
class DesignerLink:
    """The designer's absolute URL, and the same as a path from the origin (for HTML)."""

    url: str
    href: str

    def __repr__(self) -> str:
        return f"API designer: {self.url}"

    def _repr_html_(self) -> str:
        return f'<p>API designer: <a href="{html.escape(self.href)}" target="_blank">{html.escape(self.url)}</a></p>'


def designer_link(server: Mapping[str, Any], session_name: str | None) -> DesignerLink:
    """The designer of the Jupyter server `server` (its jpserver-<pid>.json), opening the notebook
    `session_name` names when it is a notebook under the server's root."""
    url = str(server["url"])
    base_url = str(server.get("base_url") or urllib.parse.urlsplit(url).path or "/")
    notebook = _notebook(session_name, server.get("root_dir"))
    query = f"?path={urllib.parse.quote(notebook)}" if notebook else ""
    return DesignerLink(f"{url.rstrip('/')}/{DESIGNER}{query}", f"{base_url.rstrip('/')}/{DESIGNER}{query}")


def _notebook(session_name: str | None, root_dir: object) -> str | None:
    """The notebook's path relative to the root, from the kernel's session name."""
    if not session_name or not session_name.endswith(".ipynb"):
        return None  # no session, or a console's
    if not Path(session_name).is_absolute():
        return session_name  # a session without a name: its API path, relative to the root
    if not isinstance(root_dir, str):
        return None
    for path, root in ((Path(session_name), Path(root_dir)), (Path(session_name).resolve(), Path(root_dir).resolve())):
        if path.is_relative_to(root):  # as written, or else through links (a root reached by one)
            return path.relative_to(root).as_posix()
    return None
