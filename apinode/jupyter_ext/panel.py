"""`%api_panel`: pick an endpoint, edit and play its test queries, deploy to the dev server.

A composite of stock ipywidgets, so it needs no front-end code and works wherever ipywidgets
does, headless included (tests click its buttons and read its widgets). It is a thin skin over
the library: queries play in the kernel through `%api_test`'s code (kernel_queries.run_queries,
the binding a pipeline runs) or on the dev server through devclient.play_on_dev (a generator's
items show as they arrive, streamed as server-sent events from the dev server), and deploying
is devclient.deploy_to_dev of the kernel's registered service, followed as it goes
(apinode.jupyter_ext.deploy_progress). Results are the tables `%api_test` shows.

Edited test queries are checked as you type, and saved into the kernel's registry when played:
`%api_export` and `%api_dev` bundle them from then on (the notebook's `%%api_test_queries`
cell keeps its own text until you change it).

Concurrency: the buttons' callbacks run on the kernel's thread, one at a time. Play and refresh
block it while they work (a second or so). Deploy does not: building a code env takes tens of
seconds, so its click only snapshots the kernel's registration (staging it, on the kernel's
thread, where cells change the registry) and returns; the dev server's start and the deploy run
in a thread of their own (`background`), the kernel runs other cells meanwhile, and the
buttons stay disabled until it ends. While a deploy runs, only its thread changes the widgets
(ipywidgets sends a trait change from any thread as a comm message on the kernel's thread-safe
IOPub channel, the pattern of its "Asynchronous Widgets" guide; no Output-widget capture, which
ipykernel 7 does not route from threads): the progress bar counts steps, `build_log` shows the
installer's lines. Errors the user can act on show as one line, others as a traceback, both in
the `errors` Output widget.
"""

from __future__ import annotations

import html
import json
import threading
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..packaging.definitions import DefinitionError, TestQuery, parse_json, parse_test_queries
from ..packaging.staging import StagedService
from ..results import QueryResult
from .deploy_progress import DeployProgress, follow_deploy
from .devclient import DEPLOY_STEPS, kernel_dev_server, play_on_dev
from .devserver import DevServerInfo
from .kernel_endpoints import KernelEndpoints, NotRegistered
from .kernel_queries import run_queries
from .magics import USER_ERRORS

KERNEL, DEV_SERVER = "kernel", "dev server"
_OK, _WRONG = "#1a7f37", "#cf222e"


def show_panel(registry: KernelEndpoints) -> ApiPanel:
    """The panel over the kernel's registry (the magic returns it, so the cell shows it)."""
    return ApiPanel(registry)


def _line(text: str, color: str | None = None) -> str:
    style = f' style="color:{color}"' if color else ""
    return f"<span{style}>{html.escape(text)}</span>"


def _tables(html_text: str) -> str:
    """HTML tables spaced out: an HTML widget does not get the notebook's table styles."""
    return (
        '<div class="apinode-panel"><style>.apinode-panel th, .apinode-panel td {padding: 2px 12px}'
        ".apinode-panel caption {text-align: left; font-weight: bold}</style>" + html_text + "</div>"
    )


class ApiPanel(widgets.VBox):  # type: ignore[misc]
    """The panel. Its widgets are public attributes, so tests and scripts drive it as a user would."""

    def __init__(
        self, registry: KernelEndpoints, dev_server: Callable[[], DevServerInfo] = kernel_dev_server, **kwargs: Any
    ) -> None:
        """`dev_server` finds (or has started) the dev server, when a button needs it."""
        self.registry = registry
        self._dev_server = dev_server
        self.endpoint = widgets.Dropdown(description="Endpoint")
        self.refresh_button = widgets.Button(
            icon="refresh", tooltip="reload the kernel's endpoints", layout=widgets.Layout(width="3em")
        )
        self.queries = widgets.Textarea(
            description="Test queries",
            placeholder='[{"name": "…", "query": {…}}]',
            layout=widgets.Layout(width="95%", height="10em"),
        )
        self.queries_status = widgets.HTML()
        self.where = widgets.ToggleButtons(
            options=[("in the kernel", KERNEL), ("on the dev server", DEV_SERVER)],
            tooltips=["play through the kernel's own binding code", "play on the dev server (deploy first)"],
        )
        self.play_button = widgets.Button(
            description="Play test queries", icon="play", button_style="primary", layout=widgets.Layout(width="auto")
        )
        self.deploy_button = widgets.Button(
            description="Deploy to dev server", icon="upload", layout=widgets.Layout(width="auto")
        )
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="12em"))
        self.status = widgets.HTML()
        self.build_log = widgets.HTML()  # a deploy's installer lines, as they come
        self.loads = widgets.HTML()
        self.results = widgets.HTML()
        self.errors = widgets.Output()
        self._listing = False  # refresh() is replacing the options: the transient values are not picks
        self._shown: tuple[str, str] | None = None  # the endpoint whose queries were loaded...
        self._loaded_text = ""  # ...and the text loaded then (edited since if `queries` differs)
        self._busy = False  # a click's work runs: the buttons stay off, even for valid queries
        self.background: threading.Thread | None = None  # the last deploy's thread (scripts may join it)
        super().__init__(
            [
                widgets.HBox([self.endpoint, self.refresh_button]),
                self.queries,
                self.queries_status,
                widgets.HBox([self.play_button, self.where, self.deploy_button]),
                widgets.HBox([self.progress, self.status]),
                self.build_log,
                self.loads,
                self.results,
                self.errors,
            ],
            **kwargs,
        )
        self.endpoint.observe(self._on_pick, "value")
        self.queries.observe(self._check_queries, "value")
        self.refresh_button.on_click(self._guarded(self.refresh))
        self.play_button.on_click(self._guarded(self.play))
        self.deploy_button.on_click(self._guarded(self._start_deploy))
        self.refresh()

    # -- what the buttons do (plain methods, callable from Python too) --------------------------
    def refresh(self) -> None:
        """List the kernel's endpoints again (after running more %%api_endpoint cells).

        The queries being edited stay when the selection does: they are reloaded only for another
        endpoint, or when unedited (to show what its %%api_test_queries cell now says)."""
        selected = self.endpoint.value
        options = [
            (f"{r.magic.service}/{r.magic.endpoint}", (r.magic.service, r.magic.endpoint))
            for r in self.registry.registrations()
        ]
        self._listing = True  # assigning options resets the value, and fires the observer
        try:
            self.endpoint.options = options
            values = [value for _, value in options]
            self.endpoint.value = selected if selected in values else (values[0] if values else None)
        finally:
            self._listing = False
        if not options:
            self._say("no endpoint in this kernel yet: run a %%api_endpoint cell, then refresh", _WRONG)
        edited = self.queries.value != self._loaded_text
        if self.endpoint.value != self._shown or not edited:
            self._show_queries()
        else:
            self._check_queries()

    def play(self) -> None:
        """Save the edited queries, then play them where `where` says; results in the table."""
        service, endpoint = self._selected()
        queries = self.registry.set_test_queries(service, endpoint, self.queries.value)
        if not queries:
            raise NotRegistered(f"{service}/{endpoint} has no test queries to play: add some above")
        self.progress.max, self.progress.value = len(queries), 0
        in_kernel = self.where.value == KERNEL
        self._say(f"playing {len(queries)} queries {'in the kernel' if in_kernel else 'on the dev server'}…")
        self.results.value = ""
        show = self._item_shower()
        if in_kernel:
            report = run_queries(self.registry, service, endpoint, on_item=show)
            self.progress.value = len(queries)
        else:
            report = play_on_dev(self._dev_server(), service, endpoint, queries, self._advance, show)
        self.results.value = _tables(report._repr_html_())
        self._say(report.summary, _OK if report.passed else _WRONG)

    def deploy(self) -> None:
        """Deploy the selected endpoint's service to the dev server; does each function load?
        Blocks until done (the button runs the deploy in the background instead)."""
        self._deploy(self._stage_selected())

    def _start_deploy(self) -> Callable[[], None]:
        """The click: stage the service now, on the kernel's thread; deploy it in the background."""
        staged = self._stage_selected()
        return lambda: self._deploy(staged)

    def _stage_selected(self) -> StagedService:
        service, _ = self._selected()
        self.progress.max, self.progress.value = DEPLOY_STEPS + 1, 0
        self.build_log.value = self.loads.value = ""
        self._say(f"deploying {service} to the dev server: starting it…")
        return self.registry.stage(service)

    def _deploy(self, staged: StagedService) -> None:
        deployment = follow_deploy(self._dev_server(), staged, self._show_progress)
        self.progress.value = self.progress.max
        self.loads.value = _tables(deployment._repr_html_())
        self._say(deployment.summary, _OK if deployment.switched else _WRONG)

    # -- reacting to the widgets --------------------------------------------------------------
    def _on_pick(self, _change: object) -> None:
        if not self._listing:
            self._show_queries()

    def _show_queries(self) -> None:
        """Load the selected endpoint's test queries into the text box (edits there are lost)."""
        self._shown = self.endpoint.value
        if self.endpoint.value is None:
            self._loaded_text = ""
        else:
            registration = self.registry.registration(*self.endpoint.value)
            self._loaded_text = json.dumps([query.to_json() for query in registration.test_queries], indent=2)
        self.queries.value = self._loaded_text
        self._check_queries()  # also when the text did not change, and so did not call it

    def _check_queries(self, _change: object = None) -> None:
        """Validate the text as test queries at each change; Play waits for valid ones."""
        self.play_button.disabled = True
        if self.endpoint.value is None:
            self.queries_status.value = ""
            return
        try:
            queries = self._parsed()
        except DefinitionError as error:
            self.queries_status.value = _line(str(error), _WRONG)
            return
        self.queries_status.value = _line(f"✓ {len(queries)} test queries", _OK)
        self.play_button.disabled = self._busy

    def _parsed(self) -> tuple[TestQuery, ...]:
        where = "test queries"
        return parse_test_queries(parse_json(self.queries.value, where), where)

    def _selected(self) -> tuple[str, str]:
        if self.endpoint.value is None:
            raise NotRegistered("no endpoint selected: run a %%api_endpoint cell, then refresh")
        selected: tuple[str, str] = self.endpoint.value
        return selected

    def _item_shower(self) -> Callable[[str, Any], None]:
        """Shows a generator's items in `results` as they arrive, until the table replaces them."""
        items: list[str] = []
        playing = ""

        def show(query: str, item: Any) -> None:
            nonlocal playing
            if query != playing:
                playing = query
                items.clear()
            items.append(f"<li><code>{html.escape(json.dumps(item, ensure_ascii=False))}</code></li>")
            self.results.value = (
                f'<div class="apinode-items"><b>{html.escape(query)}</b>: {len(items)} items so far'
                f"<ol>{''.join(items)}</ol></div>"
            )

        return show

    def _advance(self, _result: QueryResult) -> None:
        self.progress.value += 1

    def _show_progress(self, progress: DeployProgress) -> None:
        self.progress.value = len(progress.steps)  # done: the dev server's start, the steps before the last
        if progress.steps:
            self._say(f"{progress.steps[-1]}…")
        self.build_log.value = progress.lines_html()

    def _say(self, text: str, color: str | None = None) -> None:
        self.status.value = _line(text, color)

    def _guarded(self, action: Callable[[], Callable[[], None] | None]) -> Callable[[widgets.Button], None]:
        """A click handler running `action`, its errors shown in `errors`, buttons off meanwhile.
        When `action` returns more work, that work runs in a thread (`background`), guarded the
        same way, and the buttons come back when it ends."""
        buttons = (self.play_button, self.deploy_button, self.refresh_button)

        def guarded(work: Callable[[], object]) -> object:
            try:
                return work()
            except USER_ERRORS as error:
                self.errors.append_stderr(f"{error}\n")
                self._say("failed: see below", _WRONG)
            except Exception:  # a bug: the whole story, in the panel rather than lost in a log
                self.errors.append_stderr(traceback.format_exc())
                self._say("failed: see the traceback below", _WRONG)
            return None

        def enable() -> None:
            self._busy = self.deploy_button.disabled = self.refresh_button.disabled = False
            self._check_queries()  # enables Play again if the queries are valid

        def in_background(work: Callable[[], None]) -> None:
            try:
                guarded(work)
            finally:
                enable()

        def on_click(_button: widgets.Button) -> None:
            self.errors.outputs = ()
            self._busy = True
            for button in buttons:
                button.disabled = True
            more = guarded(action)
            if callable(more):
                self.background = threading.Thread(
                    target=in_background, args=(more,), name="apinode-panel-deploy", daemon=True
                )  # a daemon: a kernel shut down mid-deploy does not wait for it
                self.background.start()
            else:
                enable()

        return on_click
