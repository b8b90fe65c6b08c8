"""Op attributes and leaf values as JSON, with explicit tags for what JSON lacks.

Plain JSON carries None, bools, ints, strings, finite floats and lists. Everything
else an op attribute may hold is a one-key object ``{"$tag": payload}``:

    {"$tuple": [...]}   {"$slice": [start, stop, step]}   {"$ellipsis": 0}
    {"$float": "nan" | "inf" | "-inf"}   {"$dtype": "float32"}
    {"$scalar": ["int64", 3]}   {"$array": "arrays/7.npy"}   {"$dict": {...}}
    {"$complex": [re, im]}  (a Python complex: a weak constant's ``1j``, or a numpy
                             complex scalar's value inside "$scalar"; re and im as floats)

Anything else (a function, an arbitrary object) is refused with an error naming the
node and the attribute: a graph file holds data only, so loading runs no code.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from flowgrad.dtypes import NAMES as DTYPE_NAMES
from flowgrad.errors import GraphFileError

#: dtype kinds a graph file may hold: bool, ints, floats, complex (never object/bytes)
SAFE_KINDS = "biufc"


@functools.lru_cache(maxsize=None)   # a dtype's .name is slow, and graphs use a handful
def dtype_name(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind not in SAFE_KINDS:
        raise GraphFileError(f"dtype {dtype} cannot be stored in a graph file "
                             f"(only bool, integer, float and complex dtypes)")
    return dtype.name


def parse_dtype(text) -> np.dtype:
    """A dtype from its name, refusing object, string and structured dtypes."""
    if not isinstance(text, str) or len(text) > 20:
        raise GraphFileError(f"bad dtype {text!r}")
    return _parse_dtype(text)


@functools.lru_cache(maxsize=64)
def _parse_dtype(text) -> np.dtype:
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise GraphFileError(f"unknown dtype {text!r}") from None
    if dtype.kind not in SAFE_KINDS or dtype.fields is not None:
        raise GraphFileError(f"dtype {text!r} is not allowed in a graph file")
    if dtype.name not in DTYPE_NAMES:   # float128, complex256: no node may have them
        raise GraphFileError(f"dtype {text!r} is not one flowgrad knows (one of "
                             f"{', '.join(DTYPE_NAMES)})")
    return dtype


def _float(v: float):
    return v if math.isfinite(v) else {"$float": repr(v)}


def encode(value, store_array, where: str, extra=None):
    """``value`` as JSON data; ``store_array(arr) -> member name`` keeps arrays aside.
    ``extra(value)`` may encode a value of a type only the caller knows (else None).
    ``where`` names the node and attribute for the error message."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return _float(value)
    if isinstance(value, complex) and not isinstance(value, np.complexfloating):
        return {"$complex": [_float(value.real), _float(value.imag)]}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, store_array, where, extra) for v in value]}
    if isinstance(value, list):
        return [encode(v, store_array, where, extra) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise GraphFileError(f"{where}: a dict attribute needs string keys")
        return {"$dict": {k: encode(v, store_array, where, extra) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"$slice": [encode(v, store_array, where, extra)
                           for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"$ellipsis": 0}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"$dtype": dtype_name(value)}
    if isinstance(value, np.generic):
        item = encode(value.item(), store_array, where, extra)
        return {"$scalar": [dtype_name(value.dtype), item]}
    if isinstance(value, np.ndarray):
        dtype_name(value.dtype)
        return {"$array": store_array(value)}
    if extra is not None and (data := extra(value)) is not None:
        return data
    raise GraphFileError(f"{where}: cannot store an attribute of type "
                         f"{type(value).__name__} ({value!r:.60}) in a graph file; "
                         "only numbers, strings, tuples, lists, slices, dtypes and "
                         "numpy arrays/scalars are data")


def _complex(payload, where):
    """A "$complex" payload ``[re, im]`` as a Python complex: exactly two floats (each a
    JSON float or a "$float" tag), as ``encode`` writes them; anything else is refused."""
    if not isinstance(payload, list) or len(payload) != 2:
        raise GraphFileError(f"{where}: malformed complex {payload!r:.80}")
    parts = [p if type(p) is float else
             float(p["$float"]) if isinstance(p, dict) and len(p) == 1
             and p.get("$float") in ("nan", "inf", "-inf") else None for p in payload]
    if None in parts:
        raise GraphFileError(f"{where}: malformed complex {payload!r:.80}")
    return complex(*parts)


def decode(data, load_array, where: str, extra=None):
    """The inverse of ``encode``; ``load_array(member name) -> array``; ``extra`` is a
    {tag: decode(payload)} for the caller's own tags. (Recursion here is bounded by
    the nesting depth the JSON parser accepted.)"""
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, float):
        return data
    if isinstance(data, list):
        return [decode(v, load_array, where, extra) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise GraphFileError(f"{where}: malformed attribute {data!r:.80}")
    (tag, payload), = data.items()
    if tag == "$tuple" and isinstance(payload, list):
        return tuple(decode(v, load_array, where, extra) for v in payload)
    if tag == "$slice" and isinstance(payload, list) and len(payload) == 3:
        return slice(*(decode(v, load_array, where, extra) for v in payload))
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$float" and payload in ("nan", "inf", "-inf"):
        return float(payload)
    if tag == "$complex":
        return _complex(payload, where)
    if tag == "$dtype":
        return parse_dtype(payload)
    if tag == "$scalar" and isinstance(payload, list) and len(payload) == 2:
        value = decode(payload[1], load_array, where, extra)
        if not isinstance(value, (bool, int, float, complex)):
            raise GraphFileError(f"{where}: malformed scalar {payload!r:.80}")
        try:
            # a finite number past the dtype's range (float16 1e10) is refused as an int
            # past it is, not turned into inf with a RuntimeWarning
            with np.errstate(over="raise", invalid="raise"):
                return parse_dtype(payload[0]).type(value)
        except (OverflowError, TypeError, ValueError, FloatingPointError):
            raise GraphFileError(f"{where}: the scalar {value!r:.40} does not fit "
                                 f"{payload[0]!r:.20}") from None
    if tag == "$array" and isinstance(payload, str):
        return load_array(payload)
    if tag == "$dict" and isinstance(payload, dict):
        return {k: decode(v, load_array, where, extra) for k, v in payload.items()}
    if extra is not None and tag in extra:
        return extra[tag](payload)
    raise GraphFileError(f"{where}: unknown attribute tag {tag!r:.40}")
