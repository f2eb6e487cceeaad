"""Entry point of a pipeline, `python -s <this directory> --fd N --endpoint SERVICE/ENDPOINT`, or
of a template (the same, with `--template`).

Run by path inside an endpoint's interpreter, where apinode is not installed. The Python version
is checked before anything that needs a recent one, with a distinct exit code the node reports.
The directory is then imported as the package `apinode_runtime`, and removed from sys.path so
that user code cannot import our modules by accident.
"""

import os
import sys

EXIT_PYTHON_TOO_OLD = 3

if sys.version_info < (3, 9):
    sys.stderr.write("apinode pipelines need Python 3.9 or newer, this is %s\n" % sys.version.split()[0])
    sys.exit(EXIT_PYTHON_TOO_OLD)

if __package__:
    from .worker import main
else:
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        del sys.path[0]
    _spec = importlib.util.spec_from_file_location(
        "apinode_runtime", os.path.join(_here, "__init__.py"), submodule_search_locations=[_here]
    )
    assert _spec is not None and _spec.loader is not None
    _package = importlib.util.module_from_spec(_spec)
    sys.modules["apinode_runtime"] = _package
    _spec.loader.exec_module(_package)
    from apinode_runtime.worker import main  # type: ignore[no-redef]

sys.exit(main(sys.argv[1:]))
