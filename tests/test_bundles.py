"""Staging a service directory, building deterministic bundles, reading them without trust."""

import io
import json
import os
import stat
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pytest

from apinode.packaging.bundles import (
    BundleError,
    BundleLimits,
    bundle_bytes,
    extract_bundle,
    open_bundle,
    read_bundle,
    write_bundle,
)
from apinode.packaging.definitions import DefinitionError, load_service_file
from apinode.packaging.staging import stage_directory, stage_source

TINY = BundleLimits(max_entries=5, max_file_bytes=100, max_total_bytes=150)


def make_service(root, **endpoint):
    """A service directory: two endpoints sharing `models`, another folder also named `models`."""
    (root / "models" / "deep").mkdir(parents=True)
    (root / "models" / "deep" / "w.bin").write_bytes(b"\x00\x01")
    (root / "models" / "a.txt").write_text("a")
    (root / "models" / "__pycache__").mkdir()
    (root / "models" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (root / "other" / "models").mkdir(parents=True)
    (root / "other" / "models" / "b.txt").write_text("b")
    (root / "src").mkdir()
    (root / "src" / "score.py").write_text("def f(x):\n    return x\n")
    (root / "sum.py").write_text("def g(a, b):\n    return a + b\n")
    definition = {
        "id": "churn",
        "endpoints": [
            {"id": "score", "code": "src/score.py", "function": "f", "folders": ["models", "other/models"], **endpoint},
            {"id": "sum", "code": "sum.py", "function": "g", "folders": ["./models"]},
        ],
    }
    (root / "service.json").write_text(json.dumps(definition))
    return root


@pytest.mark.parametrize(
    "endpoint, field",
    [
        (lambda out: {"code": "../../../../etc/hostname"}, "endpoints[0].code: '../../../../etc/hostname'"),
        (lambda out: {"code": f"{out}/secret.py"}, "endpoints[0].code: '{out}/secret.py'"),
        (lambda out: {"folders": [str(out)]}, "endpoints[0].folders[0]: '{out}'"),
        (lambda out: {"folders": ["models", "../outside"]}, "endpoints[0].folders[1]: '../outside'"),
        (lambda out: {"folders": ["escape"]}, "endpoints[0].folders[0]: 'escape'"),  # a link leading out
        (lambda out: {"codeEnv": {"requirements": [], "wheelhouse": "../outside"}}, "endpoints[0].codeEnv.wheelhouse"),
    ],
)
def test_a_service_directory_bundles_nothing_from_outside_it(tmp_path, endpoint, field):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("KEY = 'private'\n")
    root = make_service(tmp_path / "service", **endpoint(outside))
    (root / "escape").symlink_to(outside)
    with pytest.raises(DefinitionError) as refused:
        stage_directory(root)
    message = str(refused.value)
    assert message.startswith(f"{root / 'service.json'}: {field.format(out=outside)}"), message
    assert f"outside the service directory {root}" in message


def zip_of(entries, attrs=None):
    """A zip holding `entries` (name -> bytes) as given, however unsafe."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = (attrs or {}).get(name, 0o644 << 16)
            archive.writestr(info, data)
    return buffer.getvalue()


SERVICE = json.dumps({"id": "s", "endpoints": [{"id": "e", "code": "e.py", "function": "f"}]})


def test_stage_directory_rewrites_paths_and_collects_files(tmp_path):
    staged = stage_directory(make_service(tmp_path))
    score, total = staged.definition.endpoints
    assert score.code == "endpoints/score/score.py" and total.code == "endpoints/sum/sum.py"
    assert score.folders == ("folders/models", "folders/models-2")
    assert total.folders == ("folders/models",)
    assert sorted(staged.files) == [
        "endpoints/score/score.py",
        "endpoints/sum/sum.py",
        "folders/models-2/b.txt",
        "folders/models/a.txt",
        "folders/models/deep/w.bin",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda root: (root / "sum.py").unlink(), "endpoint sum: code file not found"),
        (
            lambda root: (root / "other" / "models" / "b.txt").unlink() or (root / "other" / "models").rmdir(),
            "endpoint score: folder not found",
        ),
        (
            lambda root: (root / "models" / "link").symlink_to(root / "sum.py"),
            "endpoint score: folder models: symbolic links cannot be bundled",
        ),
        (lambda root: (root / "service.json").unlink(), "service.json: cannot read"),
    ],
)
def test_stage_directory_errors(tmp_path, change, message):
    make_service(tmp_path)
    change(tmp_path)
    with pytest.raises(DefinitionError, match=message):
        stage_directory(tmp_path)


def test_same_input_same_bytes(tmp_path):
    make_service(tmp_path)
    first, generation = bundle_bytes(stage_directory(tmp_path))
    os.utime(tmp_path / "sum.py", (0, 0))
    second, again = bundle_bytes(stage_directory(tmp_path))
    assert first == second and generation == again and generation.startswith("g-")
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {(i.date_time, i.external_attr >> 16, i.extra) for i in infos} == {
        ((1980, 1, 1, 0, 0, 0), stat.S_IFREG | 0o644, b"")
    }


def test_generation_is_derived_from_content_unless_given(tmp_path):
    make_service(tmp_path)
    _, before = bundle_bytes(stage_directory(tmp_path))
    (tmp_path / "sum.py").write_text("def g(a, b):\n    return a - b\n")
    data, after = bundle_bytes(stage_directory(tmp_path))
    assert after != before
    assert json.loads(read_bundle(data)["service.json"])["generation"] == after
    data, given = bundle_bytes(stage_directory(tmp_path), generation="v2")
    assert given == "v2" and json.loads(read_bundle(data)["service.json"])["generation"] == "v2"
    with pytest.raises(DefinitionError, match="generation: expected an id"):
        bundle_bytes(stage_directory(tmp_path), generation="../v")


@pytest.mark.parametrize("out", ["models/churn.zip", "models/deep/churn.zip", "churn.zip"])
def test_write_bundle_refuses_an_output_inside_a_bundled_folder(tmp_path, out):
    make_service(tmp_path)
    definition = json.loads((tmp_path / "service.json").read_text())
    definition["endpoints"][1]["folders"] = ["."]  # `--folder .`: the whole service directory
    (tmp_path / "service.json").write_text(json.dumps(definition))
    with pytest.raises(BundleError, match="the bundle would contain itself: write it outside folder"):
        write_bundle(stage_directory(tmp_path), tmp_path / out)
    assert not list(tmp_path.rglob("*.zip")) and not list(tmp_path.rglob("*.tmp"))
    outside = tmp_path.parent / f"{tmp_path.name}-churn.zip"
    write_bundle(stage_directory(tmp_path), outside)  # outside every folder: fine, and repeatable
    assert outside.read_bytes() == bundle_bytes(stage_directory(tmp_path))[0]


def test_round_trip_directory_bundle_extract(tmp_path):
    staged = stage_directory(make_service(tmp_path / "src-dir"))
    out = tmp_path / "churn.zip"
    generation = write_bundle(staged, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert out.read_bytes() == bundle_bytes(staged)[0]
    dest = tmp_path / "gens" / generation
    definition = extract_bundle(out, dest)
    assert definition.generation == generation
    assert load_service_file(dest / "service.json") == definition
    assert definition.endpoints == staged.definition.endpoints
    for name, content in staged.files.items():
        assert (dest / name).read_bytes() == content.read_bytes()
    for endpoint in definition.endpoints:
        assert (dest / endpoint.code).is_file()
        assert all((dest / folder).is_dir() for folder in endpoint.folders)
    with pytest.raises(FileExistsError):
        extract_bundle(out, dest)


def test_a_bundle_is_a_source_that_bundles_to_the_same_bytes(tmp_path):
    data, generation = bundle_bytes(stage_directory(make_service(tmp_path / "svc")))
    (tmp_path / "b.zip").write_bytes(data)
    staged = stage_source(tmp_path / "b.zip")
    assert staged.definition.generation == generation
    assert bundle_bytes(staged) == (data, generation)
    assert stage_source(tmp_path / "svc").definition.id == "churn"
    with pytest.raises(DefinitionError, match="defines service 'churn', not 'other'"):
        stage_source(tmp_path / "svc", "other")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DefinitionError, match=r"expected a service directory .* \(.ipynb\)"):
        stage_source(tmp_path / "x.txt")
    with pytest.raises(DefinitionError, match="no such file"):
        stage_source(tmp_path / "missing.zip")


def test_hand_made_zip_gets_a_content_generation_and_empty_folders():
    service = json.dumps({"id": "s", "endpoints": [{"id": "e", "code": "e.py", "function": "f", "folders": ["data"]}]})
    staged = open_bundle(zip_of([("service.json", service), ("e.py", "x"), ("data/", "")]))
    assert staged.definition.generation.startswith("g-")
    assert staged.files == {"e.py": b"x"}


BAD_BUNDLES = {
    "parent": (zip_of([("service.json", SERVICE), ("../x", "x")]), "'../x' refused: '..' in path"),
    "absolute": (zip_of([("service.json", SERVICE), ("/etc/x", "x")]), "'/etc/x' refused: absolute"),
    "inner parent": (zip_of([("service.json", SERVICE), ("a/../../x", "x")]), "'..' in path"),
    "drive": (zip_of([("service.json", SERVICE), ("C:/x", "x")]), "'C:/x' refused: absolute"),
    "backslash": (zip_of([("service.json", SERVICE), ("a\\x", "x")]), "backslash"),
    "empty segment": (zip_of([("service.json", SERVICE), ("a//x", "x")]), "empty or '.'"),
    "symlink": (
        zip_of([("service.json", SERVICE), ("e.py", "/etc/passwd")], {"e.py": (stat.S_IFLNK | 0o777) << 16}),
        "'e.py' refused: symbolic link",
    ),
    "duplicate": (zip_of([("service.json", SERVICE), ("e.py", "a"), ("e.py", "b")]), "'e.py' refused: duplicate name"),
    "file and folder": (
        zip_of([("service.json", SERVICE), ("e.py", "a"), ("e.py/b", "b")]),
        "'e.py' refused: both a file and a folder",
    ),
    "declared size": (
        zip_of([("service.json", SERVICE), ("e.py", "x" * 101)]),
        "'e.py' refused: 101 bytes, past the limit of 100 per file",
    ),
    "total size": (
        zip_of([("service.json", SERVICE), ("e.py", "x" * 100)]),
        "'e.py' refused: the entries add up past the limit of 150 bytes",
    ),
    "entries": (
        zip_of([("service.json", SERVICE)] + [(f"{i}.py", "") for i in range(5)]),
        "6 entries, past the limit of 5",
    ),
    "not a zip": (b"PK but not really", "bundle: not a bundle (zip) file"),
    "no service.json": (zip_of([("e.py", "x")]), "missing service.json"),
    "no code": (zip_of([("service.json", SERVICE)]), "code file 'e.py' is not in the bundle"),
    "folder below a file": (
        zip_of(
            [
                (
                    "service.json",
                    json.dumps(
                        {"id": "s", "endpoints": [{"id": "e", "code": "e.py", "function": "f", "folders": ["e.py/x"]}]}
                    ),
                ),
                ("e.py", ""),
            ]
        ),
        "endpoint e: folder 'e.py/x' refused: 'e.py' is a file, not a folder",
    ),
    "bad service.json": (zip_of([("service.json", "{}"), ("e.py", "")]), "bundle: service.json: id: expected an id"),
}


def lying_size_zip():
    """A zip whose headers declare 5 bytes for an entry that inflates to 100."""
    data = bytearray(zip_of([("service.json", SERVICE), ("e.py", "x" * 100)]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.rfind(signature)
        data[at + offset : at + offset + 4] = (5).to_bytes(4, "little")
    return bytes(data)


BAD_BUNDLES["actual size"] = (lying_size_zip(), "'e.py' refused")


@pytest.mark.parametrize("name", BAD_BUNDLES)
def test_bad_bundles_are_refused_before_anything_is_written(tmp_path, name):
    data, message = BAD_BUNDLES[name]
    dest = tmp_path / "gens" / "g1"
    with pytest.raises((BundleError, DefinitionError)) as caught:
        extract_bundle(data, dest, TINY)
    assert message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_read_bundle_names_the_file(tmp_path):
    path = tmp_path / "b.zip"
    path.write_bytes(b"nope")
    with pytest.raises(BundleError, match=f"^{path}: not a bundle"):
        read_bundle(path)
    with pytest.raises(BundleError, match="cannot read"):
        read_bundle(tmp_path / "missing.zip")


def test_a_wheelhouse_below_a_file_is_refused(tmp_path):
    service = {
        "id": "s",
        "endpoints": [{"id": "e", "code": "a", "function": "f", "codeEnv": {"requirements": [], "wheelhouse": "a/w"}}],
    }
    with pytest.raises(BundleError, match="folder 'a/w' refused: 'a' is a file, not a folder"):
        extract_bundle(zip_of([("service.json", json.dumps(service)), ("a", "")]), tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


def test_extraction_streams_entries_to_disk(tmp_path):
    """A bundle of 64 MiB of zeros (64 KiB zipped) is extracted holding a chunk at a time."""
    bundle = tmp_path / "zeros.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("service.json", SERVICE)
        archive.writestr("e.py", "")
        with archive.open("folders/zeros.bin", "w") as entry:
            for _ in range(64):
                entry.write(bytes(1 << 20))
    assert bundle.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        extract_bundle(bundle, tmp_path / "g")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "g" / "folders" / "zeros.bin").stat().st_size == 64 << 20
    assert peak < 8 << 20, f"{peak} bytes allocated at the peak"


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_a_regular_file_is_read_as_a_bundle(tmp_path, kind):
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "fifo.zip", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # opening it to read would wait for a writer
    with pytest.raises(BundleError, match=f"^{path}: not a regular file"):
        extract_bundle(path, tmp_path / "g")
    small = tmp_path / "small.zip"
    small.write_bytes(zip_of([("service.json", SERVICE), ("e.py", "")]))
    with pytest.raises(BundleError, match=f"^{small}: [0-9]+ bytes, past the limit of 100 for a bundle"):
        read_bundle(small, BundleLimits(10, 1000, 1000, max_archive_bytes=100))
