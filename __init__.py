"""The root of a flowgrad source checkout, not the package itself.

Python reads this file as ``flowgrad`` only when it runs in the folder that *holds* a
checkout named ``flowgrad``: that folder comes first on ``sys.path``, and without this file
Python would import the checkout as an empty namespace package (``fg.Graph`` missing). Here
the real package, ``flowgrad/`` inside the checkout with ``ops/``, ``backends/`` and ``viz/``
beside it (as pyproject.toml maps them), is loaded in this module's place, so that
``import flowgrad`` gives the same library in every folder. Installs never ship this file.
"""
import importlib.util as _util
import os as _os
import sys as _sys

_root = _os.path.dirname(_os.path.abspath(__file__))
_spec = _util.spec_from_file_location(
    __name__, _os.path.join(_root, "flowgrad", "__init__.py"),
    # flowgrad.ops, .backends and .viz live at the checkout's top level
    submodule_search_locations=[_os.path.join(_root, "flowgrad"), _root])
_package = _util.module_from_spec(_spec)
_sys.modules[__name__] = _package  # the import system returns what sys.modules holds
_spec.loader.exec_module(_package)
