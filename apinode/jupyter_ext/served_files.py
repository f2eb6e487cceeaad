"""Which files the API designer may read: those the Jupyter server's contents manager serves.

A notebook's path comes from the browser, its `--folder` paths from its cells. Each is checked
here before anything under it is read, by the contents manager's own rules (`allow_hidden`,
`is_hidden`, `file_exists`, `dir_exists`, asked at every request, so a custom manager or a
changed setting is honoured):

- under the root directory, both as written and where its links lead; else 403, whether it
  exists or not, so that nothing is learnt of the disk outside the root;
- not hidden, unless the manager allows hidden files: a hidden notebook is answered as absent
  (404), as Jupyter's contents API answers; a hidden folder, or a hidden file in a folder, with
  a 403 that says why;
- there: a notebook that is a file (404), a folder that is a directory (400: the cell is wrong).

Errors are `tornado.web.HTTPError`s, as the contents manager's own are; they name paths as the
request or the cell wrote them, or relative to the root, never the server's own directories nor
anything a file holds.

Concurrency: coroutines for the Jupyter server's event loop (the manager's methods may be
coroutines); the disk is touched only to resolve links and to test existence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_server.services.contents.manager import ContentsManager
from jupyter_server.utils import ensure_async
from tornado.web import HTTPError

from ..packaging.staging import StagedService

ALLOW_HIDDEN_HINT = "let Jupyter serve hidden files (ContentsManager.allow_hidden)"


class ServedFiles:
    """The contents manager's rules, applied to the files a notebook's services would read."""

    def __init__(self, contents_manager: ContentsManager, root_dir: Path) -> None:
        self.contents = contents_manager
        self.root_dir = root_dir.resolve()

    async def notebook(self, path: str) -> Path:
        """The file of the notebook at `path`, relative to the root directory."""
        if not path:
            raise HTTPError(400, "which notebook? pass its path, relative to the server's root")
        api_path, real = self._under_root(self.root_dir / path.lstrip("/"), path)
        if await self._hidden(api_path, real) or not await self._contents(self.contents.file_exists, api_path):
            raise HTTPError(404, f"{path}: no such notebook under the server's root directory")
        return real

    async def folder(self, notebook: str, notebook_file: Path, folder: str) -> None:
        """Refuse a `--folder` of a notebook (checked by `notebook` above) that the server
        would not serve, before anything in it is read."""
        where = f"{notebook}: folder {folder}"
        api_path, real = self._under_root(notebook_file.parent / folder, where)
        if await self._hidden(api_path, real):
            raise HTTPError(
                403, f"{where} is hidden, and the server does not serve hidden files; rename it, or {ALLOW_HIDDEN_HINT}"
            )
        if not await self._contents(self.contents.dir_exists, api_path):
            raise HTTPError(400, f"{where}: no such directory under the server's root directory")

    async def folder_files(self, notebook: str, staged: StagedService) -> None:
        """Refuse a service whose folders, checked by `folder` above, hold hidden files."""
        for source in staged.files.values():
            if isinstance(source, Path):
                api_path = self._api_path(source.resolve())
                if await self._hidden(api_path, None):
                    raise HTTPError(
                        403,
                        f"{notebook}: a folder holds {api_path}, a hidden file the server does not serve; "
                        f"remove it, or {ALLOW_HIDDEN_HINT}",
                    )

    def _under_root(self, candidate: Path, shown: str) -> tuple[str, Path]:
        """(API path, real path) of `candidate`, if it is under the root as written and where
        its links lead; the written form is checked first, so that a path outside the root is
        refused without a look at the disk there."""
        outside = HTTPError(403, f"{shown} is outside the server's root directory")
        written = Path(os.path.normpath(candidate))
        if not written.is_relative_to(self.root_dir):
            raise outside
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links (RuntimeError before 3.13), a NUL
            raise HTTPError(400, f"{shown}: not a usable path") from None
        if not real.is_relative_to(self.root_dir):
            raise outside
        return self._api_path(written), real

    def _api_path(self, path: Path) -> str:
        relative = path.relative_to(self.root_dir)
        return "" if relative == Path() else relative.as_posix()

    @staticmethod
    async def _contents(method: Callable[[str], Any], path: str) -> bool:
        """A contents manager's answer about `path`, whether the manager is sync or async."""
        return bool(await ensure_async(method(path)))

    async def _hidden(self, api_path: str, real: Path | None) -> bool:
        """Whether the manager hides the path, as written or (given `real`) where it leads."""
        if self.contents.allow_hidden:
            return False
        for path in (api_path,) if real is None else (api_path, self._api_path(real)):
            if await self._contents(self.contents.is_hidden, path):
                return True
        return False
