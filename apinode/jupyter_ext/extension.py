"""The `apinode` Jupyter server extension: the API designer, its REST API, and the dev server.

Loaded by Jupyter from the `jpserver_extensions` config that the package installs
(jupyter-config/jupyter_server_config.d/apinode.json), so `pip install apinode[jupyter]` is all
it takes. The dev server is started on demand, by the first deploy, play or proxied call (or a
kernel asking for it), and stopped with the Jupyter server, in `stop_extension`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float

from .designer import Designer
from .devserver import DevServer
from .handlers import STATIC, default_handlers
from .served_files import ServedFiles


class ApiNodeExtension(ExtensionApp):
    name = "apinode"
    load_other_extensions = True
    static_paths = [str(STATIC)]

    dev_server_start_timeout = Float(
        60.0,
        config=True,
        help="Seconds the dev server (an apinode node, one per Jupyter server) may take to start "
        "listening before a deploy reports it as failed.",
    )
    dev_server_stop_timeout = Float(
        10.0,
        config=True,
        help="Seconds the dev server gets to drain and stop its pipelines after SIGTERM, when "
        "Jupyter stops, before it and its pipelines are killed.",
    )

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.dev_server = DevServer(
            os.getpid(), Path(self.serverapp.runtime_dir), self.dev_server_start_timeout, self.dev_server_stop_timeout
        )
        contents = self.serverapp.contents_manager
        root_dir = Path(getattr(contents, "root_dir", self.serverapp.root_dir))  # a file manager's own
        self.designer = Designer(ServedFiles(contents, root_dir), self.dev_server)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def stop_extension(self) -> None:
        await asyncio.to_thread(self.dev_server.stop)
