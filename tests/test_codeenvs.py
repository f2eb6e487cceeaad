"""Code envs: built once per (Python, requirements), isolated from the node, offline from a
bundled wheelhouse, serialized across processes, listed and pruned, and served by `apinode run`.

The installs are real (six==1.16.0 from the package index, a wheel built here); cache roots are
temporary directories. Tests that may use uv put the directory holding it (next to this
interpreter) on PATH; each of them passes with pip too, only slower.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dataikuapi
import pytest
import requests
from support import UV, NodeProcess, make_admin_key

from apinode.cli import main
from apinode.node.interpreters import codeenv_python
from apinode.packaging.bundles import extract_bundle, write_bundle
from apinode.packaging.codeenvs import (
    MARKER,
    CodeEnvCache,
    CodeEnvError,
    normalize_requirements,
)
from apinode.packaging.definitions import CodeEnv, DefinitionError, parse_service
from apinode.packaging.installers import uv_sources_from_pip_config
from apinode.packaging.staging import stage_directory

SIX = CodeEnv(("six==1.16.0",))
MISSING = "apinode-no-such-package-xyz==1.0"
TINY = "apinode-tiny-testpkg"
PROBE = """\
import sys

def probe():
    found = {}
    for name in ("tornado", "six", "leaky", "apinode_tiny_testpkg"):
        try:
            module = __import__(name)
        except ImportError:
            found[name] = None
        else:
            found[name] = getattr(module, "__version__", "present")
    return {"modules": found, "python": sys.executable}
"""


def python_says(python, code):
    return subprocess.run([str(python), "-s", "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()


def imports_of(built):
    """Which of six and tornado the env's interpreter imports, run as pipelines run it."""
    return json.loads(
        subprocess.run(
            [
                str(built.python),
                "-s",
                "-c",
                "import importlib.util, json; print(json.dumps("
                "{m: importlib.util.find_spec(m) is not None for m in ('six', 'tornado')}))",
            ],
            capture_output=True,
            text=True,
            env=built.env_vars,
            timeout=60,
            check=True,
        ).stdout
    )


def service_dir(root, endpoints, **files):
    root.mkdir(parents=True, exist_ok=True)
    (root / "probe.py").write_text(PROBE)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "service.json").write_text(
        json.dumps(
            {
                "id": "envs",
                "endpoints": [{"code": "probe.py", "function": "probe", **endpoint} for endpoint in endpoints],
            }
        )
    )
    return root


# -- definitions, keys, configuration ---------------------------------------------------------


def test_requirements_normalize_to_one_key():
    assert normalize_requirements(
        [" Six==1.16.0", "", "zope.Interface>=5", "six==1.16.0", "./Local/Pkg", "Pkg-1.0-py3-none-any.whl"]
    ) == ("./Local/Pkg", "Pkg-1.0-py3-none-any.whl", "six==1.16.0", "zope-interface>=5")
    cache = CodeEnvCache(Path("/nonexistent"))
    assert cache.key(CodeEnv(("B", "a_b[x]>1"))) == cache.key(CodeEnv(("A-B[x]>1", "b", " ")))
    assert cache.key(CodeEnv(("a",))) != cache.key(CodeEnv(("a==1",)))


def test_code_env_definition_holds_a_wheelhouse_and_refuses_options():
    def parsed(code_env):
        return parse_service(
            {"id": "s", "endpoints": [{"id": "e", "code": "e.py", "function": "f", "codeEnv": code_env}]},
            "service.json",
        )

    env = parsed({"requirements": ["six"], "wheelhouse": "wheels/e"}).endpoints[0].code_env
    assert env == CodeEnv(("six",), "wheels/e")
    assert env.to_json() == {"requirements": ["six"], "wheelhouse": "wheels/e"}
    assert CodeEnv(("six",)).to_json() == {"requirements": ["six"]}
    with pytest.raises(DefinitionError, match=r"codeEnv.requirements\[1\]: expected a requirement"):
        parsed({"requirements": ["six", "--index-url=http://elsewhere"]})
    with pytest.raises(DefinitionError, match="codeEnv.wheelhouse: expected a non-empty string"):
        parsed({"requirements": [], "wheelhouse": ""})


def test_uv_reads_the_package_sources_pip_is_configured_with():
    listing = textwrap.dedent("""\
        global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
        global.find-links='/ignored'
        global.index-url='https://mirror.example/simple'
        :env:.find-links='/opt/wheels'
        :env:.cert='/etc/ssl/certs/ca.crt'
        """)
    assert uv_sources_from_pip_config(listing) == [
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "file:///opt/a/simple",
        "--extra-index-url",
        "file:///opt/b/simple",
        "--find-links",
        "/opt/wheels",
        "--index-strategy",
        "unsafe-best-match",
    ]
    assert uv_sources_from_pip_config("global.cert='/x'\n") == []


def test_staging_copies_a_source_wheelhouse(tmp_path):
    (tmp_path / "mywheels").mkdir()
    (tmp_path / "mywheels" / "x-1-py3-none-any.whl").write_bytes(b"wheel")
    source = service_dir(tmp_path, [{"id": "e", "codeEnv": {"requirements": ["x==1"], "wheelhouse": "mywheels"}}])
    staged = stage_directory(source)
    assert staged.definition.endpoints[0].code_env.wheelhouse == "wheels/mywheels"
    assert "wheels/mywheels/x-1-py3-none-any.whl" in staged.files


# -- building ----------------------------------------------------------------------------------


def test_pip_builds_an_env_from_the_index_once(tmp_path):
    cache = CodeEnvCache(tmp_path / "envs", installer="pip")
    lines = []
    built = cache.ensure(SIX, progress=lines.append)
    assert built.python == tmp_path / "envs" / built.key / "bin" / "python"
    assert imports_of(built) == {"six": True, "tornado": False}
    assert python_says(built.python, "import six; print(six.__version__)") == "1.16.0"
    # the node's pip installed it from outside: the env was not seeded with a pip of its own
    assert python_says(built.python, "import importlib.util; print(importlib.util.find_spec('pip'))") == "None"
    assert lines[0] == "building for 1 requirement with pip: six==1.16.0"
    assert any("six" in line for line in lines[1:-1]) and lines[-1].startswith("built in")
    assert json.loads((built.directory / MARKER).read_text())["requirements"] == ["six==1.16.0"]
    again = []
    assert cache.ensure(CodeEnv(("Six==1.16.0", "")), progress=again.append) == built
    assert again == []  # found complete: nothing built


@pytest.mark.skipif(UV is None, reason="uv is not installed next to this interpreter")
def test_uv_builds_an_env_and_drops_a_half_built_one(tmp_path, uv_path):
    cache = CodeEnvCache(tmp_path / "envs")
    half_built = tmp_path / "envs" / cache.key(SIX)
    (half_built / "bin").mkdir(parents=True)
    (half_built / "leftover").write_text("from a build killed halfway")
    lines = []
    built = cache.ensure(SIX, progress=lines.append)
    assert lines[:2] == ["removing a half-built env", "building for 1 requirement with uv: six==1.16.0"]
    assert not (half_built / "leftover").exists()
    assert imports_of(built) == {"six": True, "tornado": False}
    assert "PYTHONPATH" not in built.env_vars and built.env_vars["VIRTUAL_ENV"] == str(half_built)


def test_a_bad_requirement_fails_clearly_and_leaves_nothing(tmp_path, uv_path):
    cache = CodeEnvCache(tmp_path / "envs")
    with pytest.raises(CodeEnvError) as caught:
        cache.ensure(CodeEnv(("six==1.16.0", MISSING)), progress=lambda line: None)
    message = str(caught.value)
    assert MISSING in message and "failed (exit code" in message
    assert "apinode-no-such-package-xyz" in message.split("failed (exit code", 1)[1]
    assert list((tmp_path / "envs").iterdir()) == []


def test_concurrent_builds_of_one_env_from_two_processes_build_once(tmp_path, uv_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""\
        import sys, time
        from pathlib import Path
        from apinode.packaging.codeenvs import CodeEnvCache
        from apinode.packaging.definitions import CodeEnv
        Path(sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        built = CodeEnvCache(Path({str(tmp_path / "envs")!r})).ensure(
            CodeEnv(("six==1.16.0",)), progress=lambda line: print("|", line, flush=True))
        print("python", built.python)
        """)
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"ready{n}")], stdout=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready{n}").exists() for n in range(2)):
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sum(output.count("| building for") for output in outputs) == 1, outputs
    assert len({output.splitlines()[-1] for output in outputs}) == 1  # the same interpreter
    assert len([path for path in (tmp_path / "envs").iterdir() if path.is_dir()]) == 1


def test_an_env_builds_offline_from_a_bundled_wheelhouse(tmp_path, uv_path, monkeypatch):
    project = tmp_path / "project"
    (project / "apinode_tiny_testpkg").mkdir(parents=True)
    (project / "apinode_tiny_testpkg" / "__init__.py").write_text('__version__ = "0.1"\n')
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["flit_core>=3.4,<4"]
        build-backend = "flit_core.buildapi"
        [project]
        name = "{TINY}"
        version = "0.1"
        description = "a wheel built by apinode's tests"
        """)
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(project)],
        check=True,
        timeout=120,
    )
    source = service_dir(
        tmp_path / "svc",
        [
            {"id": "a", "codeEnv": {"requirements": [f"{TINY}==0.1"]}},
            {"id": "b", "codeEnv": {"requirements": [f"{TINY.upper()}==0.1"]}},
        ],
    )
    monkeypatch.setenv("PIP_FIND_LINKS", str(dist))  # where `pip wheel` finds it, no index
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    bundles = [tmp_path / "one.zip", tmp_path / "two.zip"]
    for bundle in bundles:
        assert main(["build", str(source), "-o", str(bundle), "--wheelhouse"]) == 0
    assert bundles[0].read_bytes() == bundles[1].read_bytes()

    generation = tmp_path / "generation"
    definition = extract_bundle(bundles[0], generation)
    a, b = definition.endpoints
    assert a.code_env.wheelhouse == b.code_env.wheelhouse == "wheels/a"
    wheels = [path.name for path in (generation / "wheels" / "a").iterdir()]
    assert len(wheels) == 1 and wheels[0].startswith("apinode_tiny_testpkg-0.1-")
    for variable in ("PIP_INDEX_URL", "UV_INDEX_URL"):  # any index access would now fail
        monkeypatch.setenv(variable, "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS")
    cache = CodeEnvCache(tmp_path / "envs")
    python, env = codeenv_python(cache, a, generation, progress=lambda line: None)
    assert codeenv_python(cache, b, generation) == (python, env)
    assert python_says(python, "import apinode_tiny_testpkg as t; print(t.__version__)") == "0.1"


# -- serving and managing ----------------------------------------------------------------------


def test_pipelines_run_isolated_in_their_env_and_a_restart_builds_nothing(tmp_path, uv_path):
    leaky = tmp_path / "node-pythonpath"
    leaky.mkdir()
    (leaky / "leaky.py").write_text("")
    source = service_dir(
        tmp_path / "svc",
        [
            {"id": "one", "codeEnv": {"requirements": ["six==1.16.0"]}},
            {"id": "two", "codeEnv": {"requirements": ["Six==1.16.0"]}},
            {"id": "builtin"},
        ],
    )
    env = {
        "APINODE_CODE_ENVS": str(tmp_path / "envs"),
        "PATH": uv_path,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(leaky), os.environ.get("PYTHONPATH")))),
    }
    node = NodeProcess("run", str(source), env=env, ready_timeout=120)
    try:
        answers = {
            endpoint: requests.post(f"{node.url}/public/api/v1/envs/{endpoint}/run", json={}, timeout=30).json()[
                "response"
            ]
            for endpoint in ("one", "two", "builtin")
        }
    finally:
        node.stop()
    isolated = {"tornado": None, "six": "1.16.0", "leaky": None, "apinode_tiny_testpkg": None}
    assert answers["one"]["modules"] == answers["two"]["modules"] == isolated
    assert answers["one"]["python"] == answers["two"]["python"] != answers["builtin"]["python"]
    assert answers["builtin"]["modules"]["tornado"] and answers["builtin"]["modules"]["leaky"]
    assert "building for 1 requirement" in node.output
    assert len([path for path in (tmp_path / "envs").iterdir() if path.is_dir()]) == 1

    again = NodeProcess("run", str(source), env=env, ready_timeout=60)
    again.stop()
    assert "building for" not in again.output


def test_relative_data_dir_and_cache_paths_serve_code_envs(tmp_path, uv_path, monkeypatch):
    """Relative paths on the command line and in $APINODE_CODE_ENVS mean the current directory's."""
    monkeypatch.chdir(tmp_path)
    service_dir(tmp_path / "svc", [{"id": "env", "codeEnv": {"requirements": []}}])
    env = {"APINODE_CODE_ENVS": "envs", "PATH": uv_path}
    node = NodeProcess("run", "svc", env=env, ready_timeout=120)
    try:
        response = requests.post(f"{node.url}/public/api/v1/envs/env/run", json={}, timeout=30)
    finally:
        node.stop()
    assert response.status_code == 200, response.text
    (key,) = [path.name for path in (tmp_path / "envs").iterdir() if path.is_dir()]
    assert response.json()["response"]["python"] == str(tmp_path / "envs" / key / "bin" / "python")

    write_bundle(stage_directory(tmp_path / "svc"), tmp_path / "svc.zip", "g1")
    admin_key = make_admin_key("data")
    node = NodeProcess("serve", "--data-dir", "data", env=env, ready_timeout=60)
    try:
        admin = dataikuapi.APINodeAdminClient(node.url, admin_key)
        admin.create_service("envs")
        admin.service("envs").import_generation_from_archive(str(tmp_path / "svc.zip"))
        admin.service("envs").switch_to_newest()
        response = requests.post(f"{node.url}/public/api/v1/envs/env/run", json={}, timeout=30)
    finally:
        node.stop()
    assert response.status_code == 200, response.text
    assert response.json()["response"]["python"] == str(tmp_path / "data" / "code-envs" / key / "bin" / "python")
    assert sorted(path.name for path in (tmp_path / "data" / "code-envs").iterdir()) == [
        key,
        f"{key}.in-use",
        f"{key}.lock",
    ]

    shared = tmp_path / "shared"  # serve --code-envs: another cache, here a relative path too
    node = NodeProcess("serve", "--data-dir", "data", "--code-envs", "shared", env=env, ready_timeout=60)
    try:
        response = requests.post(f"{node.url}/public/api/v1/envs/env/run", json={}, timeout=30)
    finally:
        node.stop()
    assert response.json()["response"]["python"] == str(shared / key / "bin" / "python")


def test_a_code_env_cache_path_must_be_absolute():
    with pytest.raises(ValueError, match="absolute path"):
        CodeEnvCache(Path("envs"))


def test_run_exits_with_the_error_of_an_env_that_cannot_be_built(tmp_path, uv_path):
    source = service_dir(tmp_path / "svc", [{"id": "bad", "codeEnv": {"requirements": [MISSING]}}])
    result = subprocess.run(
        [sys.executable, "-m", "apinode.cli", "run", str(source), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "APINODE_CODE_ENVS": str(tmp_path / "envs")},
    )
    assert result.returncode == 1
    error = result.stderr[result.stderr.index("apinode run: code env") :].splitlines()
    assert MISSING in error[0] and "failed (exit code 1)" in error[0]
    assert "apinode-no-such-package-xyz" in "\n".join(error[1:])  # the installer's reason
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "envs").iterdir()) == []


def test_envs_lists_and_prunes_what_no_generation_uses(tmp_path, uv_path, capsys):
    data_dir = tmp_path / "data"
    cache = CodeEnvCache(data_dir / "code-envs")
    used, unused = cache.ensure(SIX), cache.ensure(CodeEnv(()))
    generation = data_dir / "services" / "envs" / "generations" / "g1"
    service_dir(generation, [{"id": "e", "codeEnv": {"requirements": ["six==1.16.0"]}}])
    capsys.readouterr()

    assert main(["envs", "list", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["KEY", "SIZE", "REQUIREMENTS", "USED", "BY"]
    rows = {line.split()[0]: line for line in listing[1:-1]}
    assert rows[used.key].split()[3:] == ["six==1.16.0", "envs/g1"]
    assert rows[unused.key].split()[3:] == ["-", "-"]
    assert listing[-1] == f"2 code env(s) in {data_dir / 'code-envs'}"

    assert main(["envs", "prune", "--data-dir", str(data_dir)]) == 0  # this process runs in them
    assert capsys.readouterr().out.startswith(f"kept, in use by a running node: {unused.key} ")
    cache.close()  # as a node does when it stops
    assert main(["envs", "prune", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"removed {unused.key} ")
    assert sorted(path.name for path in (data_dir / "code-envs").iterdir()) == [
        used.key,
        f"{used.key}.in-use",
        f"{used.key}.lock",
    ]


def test_prune_of_a_shared_cache_spares_the_envs_a_running_node_uses(tmp_path, uv_path, capsys):
    """Another node's generations are not on this data directory: its running process marks its envs."""
    shared = tmp_path / "shared"
    source = service_dir(tmp_path / "svc", [{"id": "env", "codeEnv": {"requirements": []}}])
    node = NodeProcess("run", str(source), env={"APINODE_CODE_ENVS": str(shared), "PATH": uv_path}, ready_timeout=120)
    try:
        (built,) = CodeEnvCache(shared).entries()
        assert main(["envs", "prune", "--code-envs", str(shared), "--data-dir", str(tmp_path / "empty")]) == 0
        assert capsys.readouterr().out.startswith(f"kept, in use by a running node: {built.key} ")
        assert requests.post(f"{node.url}/public/api/v1/envs/env/run", json={}, timeout=30).status_code == 200
    finally:
        node.stop()
    assert main(["envs", "prune", "--code-envs", str(shared)]) == 0
    assert capsys.readouterr().out.startswith(f"removed {built.key} ")
    assert list(shared.iterdir()) == []
