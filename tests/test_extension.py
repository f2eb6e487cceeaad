"""The Jupyter server extension's handlers, on a real Jupyter server (pytest-jupyter) whose base
URL has an awkward prefix, with notebooks written into its root directory."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from support import write_notebook
from tornado.httpclient import HTTPClientError

pytest_plugins = ("pytest_jupyter.jupyter_server",)

pytestmark = pytest.mark.timeout(90)

ADD = "%%api_endpoint demo/add --function add\ndef add(a, b):\n    return a + b\n"
ADD_QUERIES = (
    '%%api_test_queries demo/add\n[{"name": "three", "query": {"a": 1, "b": 2}, "expected": 3},'
    ' {"name": "wrong", "query": {"a": 1, "b": 1}, "expected": 3}]'
)
BROKEN = "%%api_endpoint demo/broken --function f\nimport no_such_module_here\n\ndef f():\n    return 1\n"
OTHER = "%%api_endpoint other/hello --function hello\ndef hello():\n    return 'hi'\n"


@pytest.fixture
def notebook(jp_root_dir):
    (jp_root_dir / "sub").mkdir()
    write_notebook(jp_root_dir / "sub" / "demo.ipynb", "import math", ADD, ADD_QUERIES, BROKEN, OTHER)
    return "sub/demo.ipynb"


async def fetch_json(jp_fetch, *parts, **kwargs):
    response = await jp_fetch(*parts, **kwargs)
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


async def refused(jp_fetch, *parts, **kwargs) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch(*parts, **kwargs)
    body = caught.value.response.body
    return caught.value.code, json.loads(body)["message"] if body else ""


def post(body):
    return {"method": "POST", "body": json.dumps(body)}


async def test_endpoints_lists_services_endpoints_and_test_queries(jp_fetch, notebook):
    answer = await fetch_json(jp_fetch, "apinode", "api", "endpoints", params={"path": notebook})
    assert answer["path"] == notebook
    assert [service["id"] for service in answer["services"]] == ["demo", "other"]
    demo = answer["services"][0]
    assert [(e["id"], e["function"]) for e in demo["endpoints"]] == [("add", "add"), ("broken", "f")]
    assert demo["endpoints"][0]["testQueries"][0] == {"name": "three", "query": {"a": 1, "b": 2}, "expected": 3}


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("", 400, "which notebook"),
        ("../outside.ipynb", 403, "outside the server's root"),
        ("/../../etc/passwd", 403, "outside the server's root"),
        ("missing.ipynb", 404, "no such notebook"),
        ("sub/not-a-notebook.txt", 400, "not a readable notebook"),
        ("loop/nb.ipynb", 400, "not a usable path"),
    ],
)
async def test_endpoints_refuses_bad_paths(jp_fetch, jp_root_dir, notebook, path, status, says):
    (jp_root_dir.parent / "outside.ipynb").write_text("{}")
    (jp_root_dir / "loop").symlink_to(jp_root_dir / "loop")  # resolving it never ends
    (jp_root_dir / "sub" / "not-a-notebook.txt").write_text("hello")
    code, message = await refused(jp_fetch, "apinode", "api", "endpoints", params={"path": path})
    assert (code, says in message) == (status, True), message


async def test_a_bad_cell_is_a_400_naming_the_cell(jp_fetch, jp_root_dir):
    write_notebook(jp_root_dir / "bad.ipynb", "%%api_endpoint demo/add --function add --ceil 0\nx = 1\n")
    code, message = await refused(jp_fetch, "apinode", "api", "endpoints", params={"path": "bad.ipynb"})
    assert code == 400 and "cell 1" in message and "ceil" in message


async def test_deploy_says_which_functions_load_then_play_judges_the_queries(jp_fetch, notebook, jp_root_dir):
    play_add = post({"path": notebook, "service": "demo", "endpoint": "add"})
    code, message = await refused(jp_fetch, "apinode", "api", "dev", "play", **play_add)
    assert (code, message) == (409, "the dev server serves nothing of service 'demo' yet: deploy it first")

    deployed = await fetch_json(jp_fetch, "apinode", "api", "dev", "deploy", **post({"path": notebook}))
    demo, other = deployed["services"]
    assert demo["switched"] is False and other["switched"] is True
    assert demo["serving"] is None and demo["summary"].endswith("serves nothing of it yet (no deploy of it has loaded)")
    code, message = await refused(jp_fetch, "apinode", "api", "dev", "play", **play_add)
    assert code == 409 and "deploy it first" in message  # a failed first deploy serves nothing either
    assert demo["endpoints"]["add"] == {"loaded": True, "error": None, "traceback": None}
    broken = demo["endpoints"]["broken"]
    assert broken["loaded"] is False and "no_such_module_here" in broken["error"]
    assert "ModuleNotFoundError" in broken["traceback"]

    write_notebook(jp_root_dir / notebook, ADD, ADD_QUERIES)  # the author fixes the notebook
    deployed = await fetch_json(jp_fetch, "apinode", "api", "dev", "deploy", **post({"path": notebook}))
    assert deployed["services"][0]["switched"] is True

    played = await fetch_json(jp_fetch, "apinode", "api", "dev", "play", **play_add)
    assert played["passed"] is False
    three, wrong = played["results"]
    assert (three["status"], three["response"], three["verdict"]) == (200, 3, "PASS")
    assert (wrong["response"], wrong["expected"], wrong["verdict"]) == (2, 3, "FAIL")
    assert three["timeMs"] > 0 and three["cells"][-1] == "PASS"
    assert played["headers"][-1] == "result"


async def test_play_refuses_unknown_endpoints_and_endpoints_without_queries(jp_fetch, notebook):
    def body(service, endpoint):
        return post({"path": notebook, "service": service, "endpoint": endpoint})

    assert (await refused(jp_fetch, "apinode", "api", "dev", "play", **body("nope", "add")))[0] == 404
    assert (await refused(jp_fetch, "apinode", "api", "dev", "play", **body("demo", "nope")))[0] == 404
    code, message = await refused(jp_fetch, "apinode", "api", "dev", "play", **body("other", "hello"))
    assert code == 400 and "%%api_test_queries other/hello" in message
    code, message = await refused(jp_fetch, "apinode", "api", "dev", "play", **post({"path": notebook}))
    assert code == 400 and "service, endpoint" in message


async def test_proxy_passes_calls_status_and_body_to_the_dev_server(jp_fetch, notebook):
    await jp_fetch("apinode", "api", "dev", "deploy", **post({"path": notebook}))
    answer = await fetch_json(jp_fetch, "apinode", "dev", "public", "api", "v1", "other", "hello", "run", **post({}))
    assert answer["response"] == "hi"
    assert answer["apiContext"]["serviceId"] == "other"
    code, message = await refused(jp_fetch, "apinode", "dev", "public", "api", "v1", "other", "nope", "run", **post({}))
    assert code == 404 and "no endpoint 'nope'" in message
    code, message = await refused(
        jp_fetch, "apinode", "dev", "public", "api", "v1", "other", "hello", "run", **post({"unexpected": 1})
    )
    assert code == 400 and "unexpected" in message


async def test_bundle_downloads_the_service_zip(jp_fetch, notebook):
    response = await jp_fetch("apinode", "api", "bundle", params={"path": notebook, "service": "other"})
    assert response.headers["Content-Type"] == "application/zip"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="other-g-') and disposition.endswith('.zip"')
    with zipfile.ZipFile(io.BytesIO(response.body)) as bundle:
        assert json.loads(bundle.read("service.json"))["id"] == "other"
    assert (await refused(jp_fetch, "apinode", "api", "bundle", params={"path": notebook, "service": "x"}))[0] == 404


@pytest.mark.parametrize("folder", ["../../outside-secrets", "ABSOLUTE", ".hidden", "linked"])
async def test_bundle_and_deploy_refuse_folders_outside_the_root_or_hidden(jp_fetch, jp_root_dir, folder):
    secrets = jp_root_dir.parent / "outside-secrets"
    secrets.mkdir()
    (secrets / "id_rsa").write_text("private")
    (jp_root_dir / "sub").mkdir()
    (jp_root_dir / "sub" / ".hidden").mkdir()
    (jp_root_dir / "sub" / ".hidden" / "token").write_text("private")
    (jp_root_dir / "sub" / "linked").symlink_to(secrets)
    folder = str(secrets) if folder == "ABSOLUTE" else folder
    cell = f"%%api_endpoint leak/f --function f --folder {folder}\ndef f():\n    return 1\n"
    write_notebook(jp_root_dir / "sub" / "leak.ipynb", cell)
    code, message = await refused(
        jp_fetch, "apinode", "api", "bundle", params={"path": "sub/leak.ipynb", "service": "leak"}
    )
    assert code == 403 and "folder" in message and ("outside the server's root" in message or "hidden" in message)
    code, message = await refused(jp_fetch, "apinode", "api", "dev", "deploy", **post({"path": "sub/leak.ipynb"}))
    assert code == 403 and "folder" in message


HIDDEN_NOTEBOOKS = [".hidden/secret.ipynb", ".secret.ipynb", "sub/../.hidden/secret.ipynb", "sub/link.ipynb"]


@pytest.mark.parametrize("path", HIDDEN_NOTEBOOKS)
async def test_notebooks_the_contents_manager_hides_are_as_absent_until_it_allows_hidden_files(
    jp_fetch, jp_serverapp, jp_root_dir, path
):
    (jp_root_dir / ".hidden").mkdir()
    write_notebook(jp_root_dir / ".hidden" / "secret.ipynb", OTHER)
    write_notebook(jp_root_dir / ".secret.ipynb", OTHER)
    (jp_root_dir / "sub").mkdir()
    (jp_root_dir / "sub" / "link.ipynb").symlink_to(jp_root_dir / ".hidden" / "secret.ipynb")
    requests = [
        ("apinode", "api", "endpoints", {"params": {"path": path}}),
        ("apinode", "api", "bundle", {"params": {"path": path, "service": "other"}}),
        ("apinode", "api", "dev", "deploy", post({"path": path})),
    ]
    for *parts, kwargs in requests:
        code, message = await refused(jp_fetch, *parts, **kwargs)
        assert (code, message) == (404, f"{path}: no such notebook under the server's root directory")
    assert not jp_serverapp.web_app.settings["apinode"].dev_server.running

    jp_serverapp.contents_manager.allow_hidden = True  # read live: the manager's rule, not a copy
    answer = await fetch_json(jp_fetch, "apinode", "api", "endpoints", params={"path": path})
    assert [service["id"] for service in answer["services"]] == ["other"]


async def test_a_file_that_is_not_a_notebook_is_refused_without_quoting_it(jp_fetch, jp_root_dir):
    (jp_root_dir / "notes.ipynb").write_text("password=hunter2 (the rest of the file says nothing)")
    code, message = await refused(jp_fetch, "apinode", "api", "endpoints", params={"path": "notes.ipynb"})
    assert code == 400 and "not a readable notebook: it is not JSON" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("folder", ["../outside", "../no-such-folder", "OUTSIDE", "../outside/../../etc"])
async def test_folders_outside_the_root_are_refused_before_anything_under_them_is_read(
    jp_fetch, jp_serverapp, jp_root_dir, folder
):
    """Whether the folder exists and what it holds stays unknown: one 403, saying the same."""
    outside = jp_root_dir.parent / "outside"
    outside.mkdir()
    (outside / "leaked-name").symlink_to(outside)  # staging would name it in its refusal
    folder = str(outside) if folder == "OUTSIDE" else folder
    write_notebook(
        jp_root_dir / "nb.ipynb", f"%%api_endpoint leak/f --function f --folder {folder}\ndef f():\n    return 1\n"
    )
    requests = [
        ("apinode", "api", "endpoints", {"params": {"path": "nb.ipynb"}}),
        ("apinode", "api", "bundle", {"params": {"path": "nb.ipynb", "service": "leak"}}),
        ("apinode", "api", "dev", "deploy", post({"path": "nb.ipynb"})),
    ]
    for *parts, kwargs in requests:
        code, message = await refused(jp_fetch, *parts, **kwargs)
        assert (code, message) == (403, f"nb.ipynb: folder {folder} is outside the server's root directory")
    assert not jp_serverapp.web_app.settings["apinode"].dev_server.running


async def test_a_hidden_file_in_a_folder_is_refused_until_the_contents_manager_allows_hidden_files(
    jp_fetch, jp_serverapp, jp_root_dir
):
    (jp_root_dir / "data").mkdir()
    (jp_root_dir / "data" / "model.txt").write_text("m")
    (jp_root_dir / "data" / ".env").write_text("TOKEN=hunter2")
    write_notebook(jp_root_dir / "nb.ipynb", "%%api_endpoint ok/f --function f --folder data\ndef f():\n    return 1\n")
    code, message = await refused(jp_fetch, "apinode", "api", "bundle", params={"path": "nb.ipynb", "service": "ok"})
    assert (code, message) == (
        403,
        "nb.ipynb: a folder holds data/.env, a hidden file the server does not serve; "
        "remove it, or let Jupyter serve hidden files (ContentsManager.allow_hidden)",
    )
    jp_serverapp.contents_manager.allow_hidden = True
    response = await jp_fetch("apinode", "api", "bundle", params={"path": "nb.ipynb", "service": "ok"})
    with zipfile.ZipFile(io.BytesIO(response.body)) as bundle:
        assert {"folders/data/model.txt", "folders/data/.env"} <= set(bundle.namelist())


async def test_bundle_takes_folders_inside_the_root(jp_fetch, jp_root_dir):
    (jp_root_dir / "sub" / "data").mkdir(parents=True)
    (jp_root_dir / "sub" / "data" / "x.txt").write_text("x")
    write_notebook(
        jp_root_dir / "sub" / "ok.ipynb", "%%api_endpoint ok/f --function f --folder data\ndef f():\n    return 1\n"
    )
    response = await jp_fetch("apinode", "api", "bundle", params={"path": "sub/ok.ipynb", "service": "ok"})
    with zipfile.ZipFile(io.BytesIO(response.body)) as bundle:
        assert "folders/data/x.txt" in bundle.namelist()


async def test_designer_page_is_served_with_its_scripts(jp_fetch, jp_base_url):
    page = await jp_fetch("apinode", "designer")
    assert page.headers["Content-Type"].startswith("text/html")
    assert b"designer.js" in page.body
    assert "_xsrf=" in page.headers.get("Set-Cookie", "")
    script = await jp_fetch("static", "apinode", "designer.js")
    assert b"X-XSRFToken" in script.body


ROUTES = [
    ("GET", ("apinode", "api", "endpoints")),
    ("POST", ("apinode", "api", "dev", "deploy")),
    ("POST", ("apinode", "api", "dev", "play")),
    ("POST", ("apinode", "api", "dev", "start")),
    ("GET", ("apinode", "api", "bundle")),
    ("POST", ("apinode", "dev", "public", "api", "v1", "demo", "add", "run")),
    ("GET", ("apinode", "dev", "isAlive")),
]


@pytest.mark.parametrize(("method", "parts"), ROUTES)
async def test_every_handler_refuses_a_caller_without_a_token(jp_fetch, jp_serverapp, notebook, method, parts):
    kwargs = {"body": "{}"} if method == "POST" else {}
    code, _ = await refused(
        jp_fetch, *parts, method=method, headers={"Authorization": ""}, params={"path": notebook}, **kwargs
    )
    assert code in (401, 403)
    assert not jp_serverapp.web_app.settings["apinode"].dev_server.running  # nothing was started


async def test_the_designer_page_sends_a_caller_without_a_token_to_the_login_page(jp_fetch):
    code, _ = await refused(jp_fetch, "apinode", "designer", headers={"Authorization": ""}, follow_redirects=False)
    assert code == 302


async def test_an_authorizer_that_refuses_the_apinode_resource_gets_403(jp_fetch, jp_serverapp, notebook):
    class NoApinode(type(jp_serverapp.authorizer)):
        def is_authorized(self, handler, user, action, resource):
            return resource != "apinode"

    jp_serverapp.web_app.settings["authorizer"] = NoApinode(parent=jp_serverapp)
    code, message = await refused(jp_fetch, "apinode", "api", "endpoints", params={"path": notebook})
    assert code == 403 and "apinode" in message
    assert (await jp_fetch("api", "status")).code == 200  # the rest of Jupyter is not affected
