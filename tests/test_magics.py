"""The magics on an in-process InteractiveShell, and the library they call: the registry, the
global-use check of the line form, in-kernel queries, export, and deploy against a stub node."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import nbformat
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from apinode.jupyter_ext.globals_check import StandaloneError, standalone_source, undefined_globals
from apinode.jupyter_ext.magics import load_magics
from apinode.packaging.bundles import bundle_bytes, read_bundle
from apinode.packaging.notebooks import stage_notebook

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture
def ip(tmp_path, monkeypatch):
    """A shell with fresh magics, whose notebook directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    load_magics(shell)
    names = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - names:  # cheaper than shell.reset(), which collects garbage
        del shell.user_ns[name]


def registry(ip):
    return ip.magics_manager.registry["ApiMagics"].registry


def usage_error(ip, magic, line, cell=None):
    """The one-line message a magic shows for a mistake."""
    with pytest.raises(UsageError) as caught:
        if cell is None:
            ip.run_line_magic(magic, line)
        else:
            ip.run_cell_magic(magic, line, cell)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "source, names",
    [
        ("def f(x):\n    return x + OFFSET\n", ["OFFSET"]),
        ("import json\ndef f(x):\n    return json.dumps(x) + len(folders) + f(x)\n", []),
        ("@cache\ndef f(x: np.ndarray = DEFAULT) -> 'str':\n    return x\n", ["DEFAULT", "cache", "np"]),
        ("def f(x):\n    import math\n    return [math.pi * v for v in VALUES if print(v)]\n", ["VALUES"]),
        ("def f(x):\n    def inner():\n        return x + FREE\n    return inner\n", ["FREE"]),
        ("def f():\n    global STATE\n    STATE = 1\n    return STATE\n", []),
        (
            "def f():\n    class A:\n        z = 1\n        w = z + OUTER\n"
            "        def m(self):\n            return self.z + IN_METHOD\n    return A\n",
            ["IN_METHOD", "OUTER"],
        ),
    ],
)
def test_undefined_globals(source, names):
    assert undefined_globals(source) == names


def test_standalone_source():
    def nested(x):
        import math

        return math.floor(x)

    def leaning(x):
        return ADD + x

    assert standalone_source(nested) == (
        "def nested(x):\n    import math\n\n    return math.floor(x)\n",
        "nested",
    )
    with pytest.raises(StandaloneError, match="^leaning uses ADD, which its source does not"):
        standalone_source(leaning)
    with pytest.raises(StandaloneError, match="a lambda has no source of its own"):
        standalone_source(lambda x: x)
    with pytest.raises(StandaloneError, match="^<built-in function len> is a builtin_function_or"):
        standalone_source(len)


def test_the_cell_form_runs_the_cell_and_registers_it(ip):
    ip.run_cell_magic("api_endpoint", "s/add --function add --requirement numpy --ceil 3", ADD)
    assert ip.user_ns["add"](1, 2) == 3
    [registration] = registry(ip).registrations()
    assert registration.code == ADD and registration.magic.requirements == ("numpy",)
    assert registration.magic.pool == {"ceil": 3}


def test_the_cell_runs_with_its_folders_and_fails_when_its_code_raises(ip, tmp_path):
    (tmp_path / "d").mkdir()
    ip.run_cell_magic("api_endpoint", "s/a --function f --folder d", "PATHS = folders\nf = print\n")
    assert ip.user_ns["PATHS"] == [str(tmp_path / "d")]
    assert usage_error(ip, "api_endpoint", "s/b --function f", "f = print\n1 / 0\n") == (
        "the code of s/b failed here (it is registered)"
    )
    assert registry(ip).registration("s", "b").code == "f = print\n1 / 0\n"


def test_rerunning_a_cell_replaces_it_in_place_and_keeps_its_queries(ip):
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    ip.run_cell_magic("api_endpoint", "s/other --function add", ADD)
    ip.run_cell_magic("api_test_queries", "s/add", '[{"name": "q", "query": {"a": 1, "b": 2}}]')
    ip.run_cell_magic("api_endpoint", "s/add --function plus", "def plus(a, b):\n    return a + b\n")
    first, second = registry(ip).registrations()
    assert (first.magic.endpoint, first.magic.function, second.magic.endpoint) == ("add", "plus", "other")
    assert [query.name for query in first.test_queries] == ["q"]


@pytest.mark.parametrize(
    "magic, line, cell, message",
    [
        (
            "api_endpoint",
            "s/add --function add --bogus",
            ADD,
            "unrecognized arguments: --bogus; usage: %%api_endpoint SERVICE/ENDPOINT --function NAME",
        ),
        (
            "api_endpoint",
            "s/add",
            None,
            "expected SERVICE/ENDPOINT and a function name; usage: "
            "%api_endpoint SERVICE/ENDPOINT FUNCTION_NAME (or a cell: %%api_endpoint",
        ),
        ("api_endpoint", "s/add nothing", None, "no 'nothing' defined in this kernel"),
        (
            "api_test_queries",
            "s/add",
            "[]",
            "no endpoint s/add in this kernel (registered: none yet); run its %%api_endpoint cell first",
        ),
        (
            "api_test",
            "nope",
            None,
            "expected SERVICE/ENDPOINT (ids of letters, digits, '_' or '-'), "
            "got 'nope'; usage: %api_test SERVICE/ENDPOINT [JSON query]",
        ),
        ("api_services", "x", None, "takes no arguments, got 'x'; usage: %api_services"),
        (
            "api_export",
            "s",
            None,
            "the following arguments are required: -o/--output; usage: %api_export SERVICE -o FILE.zip",
        ),
        ("api_export", "s -o 'x.zip", None, "No closing quotation; usage: %api_export"),
        ("api_export", "s -o x.zip", None, "no service 's' in this kernel (registered: none yet)"),
        ("api_deploy", "s --url u", None, "required: --key; usage: %api_deploy SERVICE --url URL --key"),
        ("api_panel", "s/add", None, "takes no arguments, got 's/add'; usage: %api_panel"),
    ],
)
def test_mistakes_are_one_line_usage_errors(ip, magic, line, cell, message):
    assert message in usage_error(ip, magic, line, cell)


def test_test_queries_are_validated(ip):
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    assert usage_error(ip, "api_test_queries", "s/add", "[{]") == (
        "%%api_test_queries s/add: not valid JSON: Expecting property name enclosed in double quotes (line 1, column 3)"
    )
    assert usage_error(ip, "api_test", "s/add") == (
        's/add has no test queries: add a %%api_test_queries s/add cell, or give one: %api_test s/add {"param": value}'
    )


def test_the_line_form(ip):
    ip.run_cell("LIMIT = 3\ndef clip(x):\n    return min(x, LIMIT)\ndef twice(x):\n    return 2 * x\n")
    assert usage_error(ip, "api_endpoint", "s/clip clip").startswith(
        "clip uses LIMIT, which its source does not define"
    )
    ip.run_line_magic("api_endpoint", "s/twice twice")
    assert registry(ip).registration("s", "twice").code == "def twice(x):\n    return 2 * x\n"
    report = ip.run_line_magic("api_test", 's/twice {"x": 4}')
    assert [(r.status, r.answer, r.verdict) for r in report.results] == [(200, 8, "OK")]


def test_the_query_line_is_not_expanded(ip):
    ip.run_cell_magic("api_endpoint", "s/echo --function echo", "def echo(text):\n    return text\n")
    ip.user_ns["x"] = "expanded"
    report = ip.run_line_magic("api_test", 's/echo {"text": "{x} $x"}')
    assert report.results[0].answer == "{x} $x"


def test_a_query_that_is_not_json_gets_the_nodes_400(ip):
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    [row] = ip.run_line_magic("api_test", "s/add {a: 1}").results
    assert row.status == 400 and row.answer["errorType"] == "BadRequest"


def test_code_that_does_not_load_fails_every_query_with_its_traceback(ip):
    usage_error(ip, "api_endpoint", "s/broken --function f", "import no_such_module_here\n\ndef f():\n    pass\n")
    ip.run_cell_magic("api_test_queries", "s/broken", '[{"name": "a", "query": {}}, {"name": "b", "query": {}}]')
    report = ip.run_line_magic("api_test", "s/broken")
    assert [(r.status, r.answer["errorType"]) for r in report.results] == [(500, "EndpointLoadFailed")] * 2
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in report.results[0].answer["message"]
    assert "Traceback" in report.results[0].traceback
    assert "traceback of broken &#x27;a&#x27;" in report._repr_html_()


def test_a_missing_folder_is_named(ip, tmp_path):
    ip.run_cell_magic("api_endpoint", "s/add --function add --folder gone", ADD)
    assert usage_error(ip, "api_test", 's/add {"a": 1, "b": 2}') == (f"s/add: folder not found: {tmp_path / 'gone'}")


def test_results_show_as_html_and_text(ip):
    ip.run_cell_magic("api_endpoint", "s/tag --function tag", "def tag(t):\n    return t\n")
    report = ip.run_line_magic("api_test", 's/tag {"t": "<b>"}')
    assert "<td style" in report._repr_html_() and "&quot;&lt;b&gt;&quot;" in report._repr_html_()
    assert "#1a7f37" in report._repr_html_()  # OK is green
    assert ip.display_formatter.format(report)[0]["text/plain"] == str(report)


def test_services_overview(ip):
    assert repr(ip.run_line_magic("api_services", "")).startswith("no endpoint registered yet")
    ip.run_cell_magic(
        "api_endpoint", "s/add --function add --folder d --requirement numpy<2 --floor 2 --max-requests 100", ADD
    )
    overview = ip.run_line_magic("api_services", "")
    assert repr(overview).splitlines()[1].split() == [
        "s",
        "add",
        "add",
        "d",
        "numpy<2",
        "floor=2",
        "ceil=8",
        "cruise=2",
        "queue=16",
        "timeout=10000",
        "start=fork",
        "maxRequests=100",
        "0",
        "/public/api/v1/s/docs",
    ]
    assert "numpy&lt;2" in overview._repr_html_()


def test_export_is_relative_to_the_notebook_and_matches_its_build(ip, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("data")
    cells = [
        f"%%api_endpoint s/add --function add --folder d\n{ADD.rstrip()}",  # no last newline
        '%%api_test_queries s/add\n[{"name": "q", "query": {"a": 1, "b": 2}, "expected": 3}]',
    ]
    for cell in cells:
        assert ip.run_cell(cell).success  # as the kernel runs it, IPython's transforms included
    exported = ip.run_line_magic("api_export", "s -o out.zip")
    assert repr(exported) == (f"service 's', generation {exported.generation}: exported to {tmp_path / 'out.zip'}")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    assert (tmp_path / "out.zip").read_bytes() == bundle_bytes(stage_notebook(tmp_path / "nb.ipynb"))[0]


class StubAdmin(tornado.web.RequestHandler):
    """Answers the three admin calls of a deploy; records each request."""

    def initialize(self, calls, answers):
        self.calls, self.answers = calls, answers

    def post(self, path):
        self.calls.append(
            (
                path,
                self.request.headers.get("Authorization"),
                self.request.headers.get("Content-Type"),
                self.request.body,
            )
        )
        status, body = self.answers.get(path, (200, {}))
        self.set_status(status)
        self.finish(body)


@pytest.fixture
def stub_node():
    """A tornado app on a free port in a thread: (base URL, recorded calls, answers to give)."""
    calls, answers = [], {}
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        app = tornado.web.Application([(r"/admin/api/(.*)", StubAdmin, {"calls": calls, "answers": answers})])
        server = tornado.httpserver.HTTPServer(app)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        return server, sockets[0].getsockname()[1]

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"http://127.0.0.1:{port}", calls, answers
    loop.call_soon_threadsafe(server.stop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_deploy_creates_uploads_and_switches(ip, stub_node):
    url, calls, answers = stub_node
    answers["services/s/generations/actions/upload"] = (200, {"generation": "g-1"})
    answers["services/"] = (409, {"errorType": "Conflict", "message": "exists"})
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    deployed = ip.run_line_magic("api_deploy", f"s --url {url}/ --key admin-1")
    assert repr(deployed) == f"service 's', generation g-1: deployed, active on {url}/"
    auth = "Basic " + base64.b64encode(b"admin-1:").decode()
    assert [call[:3] for call in calls] == [
        ("services/", auth, "application/json"),
        ("services/s/generations/actions/upload", auth, "application/zip"),
        ("services/s/actions/switchTo/g-1", auth, "application/json"),
    ]
    assert json.loads(calls[0][3]) == {"serviceId": "s"}
    assert calls[1][3] == bundle_bytes(registry(ip).stage("s"))[0]
    assert read_bundle(calls[1][3])["endpoints/add/add.py"] == ADD.encode()


def test_deploying_the_same_bundle_again_switches_to_its_generation(ip, stub_node):
    url, calls, answers = stub_node
    answers["services/s/generations/actions/upload"] = (
        409,
        {"errorType": "Conflict", "message": "has that generation"},
    )
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    generation = bundle_bytes(registry(ip).stage("s"))[1]
    assert ip.run_line_magic("api_deploy", f"s --url {url} --key k").generation == generation
    assert calls[-1][0] == f"services/s/actions/switchTo/{generation}"


def test_a_refused_deploy_shows_the_nodes_message(ip, stub_node):
    url, calls, answers = stub_node
    answers["services/s/generations/actions/upload"] = (
        400,
        {"errorType": "BadBundle", "message": "entry '../x' refused", "detailedMessage": "…"},
    )
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    assert usage_error(ip, "api_deploy", f"s --url {url} --key k") == (
        f"uploading the bundle of 's' on {url} failed (HTTP 400): BadBundle: entry '../x' refused"
    )
    assert len(calls) == 2  # no switch after a failed upload


def test_a_malformed_deploy_url_is_a_one_line_error(ip):
    ip.run_cell_magic("api_endpoint", "s/add --function add", ADD)
    assert usage_error(ip, "api_deploy", "s --url notaurl --key k").startswith(
        "invalid URL 'notaurl/admin/api/services/': expected http://host:port"
    )


@pytest.mark.parametrize(
    "cell, line",
    [
        ("import os\n!ls\ndef add(a, b):\n    return a + b\n", "line 2 ('!ls')"),
        ("def add(a, b):\n    %time x = 1\n    return a + b\n", "line 2 ('%time x = 1')"),
    ],
)
def test_an_endpoint_cell_in_ipython_syntax_is_refused_before_it_runs(ip, cell, line):
    message = usage_error(ip, "api_endpoint", "s/add --function add", cell)
    assert message == (
        f"s/add: {line}: invalid syntax; endpoint cells must be plain Python (the node "
        "runs them without IPython: no !commands or %magics); the cell is not registered"
    )
    assert "add" not in ip.user_ns and registry(ip).registrations() == []


def test_a_cell_without_its_function_is_refused_at_once_naming_what_it_defines(ip):
    cell = "import math\n\ndef predict_proba(x):\n    return x\n\nTHRESHOLD = 0.5\n"
    assert usage_error(ip, "api_endpoint", "s/p --function predict", cell) == (
        "s/p: no function named 'predict'; it defines THRESHOLD, math, predict_proba (--function names it); "
        "the cell is not registered"
    )
    assert registry(ip).registrations() == [] and "predict_proba" not in ip.user_ns


def test_a_function_that_is_not_there_at_load_is_named_plainly(ip):
    ip.run_cell_magic(
        "api_endpoint", "mistakes1/species --function predict", "if False:\n    def predict():\n        pass\n"
    )
    report = ip.run_line_magic("api_test", "mistakes1/species {}")
    message = report.results[0].answer["message"]
    assert (
        message
        == "mistakes1/species: %%api_endpoint mistakes1/species has no function named 'predict'; it defines no function"
    )
