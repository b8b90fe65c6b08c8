"""Graphs that outlive the script: flowgrad's own graph file, ONNX export and import.

One responsibility per module: ``attrs`` encodes op attributes as tagged JSON,
``graphfile`` saves and loads whole graphs, ``onnx_ops`` holds the table mapping
flowgrad ops to ONNX nodes, ``onnx_export`` / ``onnx_import`` walk graphs with it.
``onnx`` itself is imported only when an ONNX function is called.
"""
from .graphfile import FORMAT_VERSION, load_graph, save_graph  # noqa: F401


def export_onnx(outputs, path, **kw):
    """Write ``outputs`` (a node or a list) and everything they need to an ONNX file.
    See flowgrad/io/onnx_export.py."""
    from .onnx_export import export_onnx as _export
    return _export(outputs, path, **kw)


def import_onnx(path, **kw):
    """Build a flowgrad Graph from an ONNX model. See flowgrad/io/onnx_import.py."""
    from .onnx_import import import_onnx as _import
    return _import(path, **kw)

__all__ = ["FORMAT_VERSION", "export_onnx", "import_onnx", "load_graph", "save_graph"]


def __dir__():
    # the public names only: dir(fg.io) shows no np, math or threading
    return sorted(__all__)
