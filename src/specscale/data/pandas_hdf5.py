"""A safe reader of pandas DataFrames stored in HDF5 by ``DataFrame.to_hdf``: numeric columns read
with h5py only, never with pandas or PyTables, which unpickle what a file holds (a crafted file
would run code). The few pickles PyTables writes for column names are read by an unpickler that
accepts only literals."""

from __future__ import annotations

import io
import pickle
import pickletools

import h5py
import numpy as np

from specscale.data.sources import DataError

# pickle opcodes that build only literals (numbers, strings, bytes, None, bools) and containers of
# them: no GLOBAL/STACK_GLOBAL (imports), REDUCE/BUILD/INST/OBJ/NEWOBJ (calls), EXT* or PERSID
# fmt: off
_LITERAL_OPS = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT",
    "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "BYTEARRAY8", "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET", "GET", "BINGET",
    "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
})
# fmt: on


class _LiteralUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # never reached after the opcode check; refuses all the same
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def literal_unpickle(data: bytes, what: str):
    """Python literals from a pickle (how PyTables stores list attributes, e.g. pandas' column
    names), refusing any pickle that would import or call anything: ``what`` names it in the
    DataError."""
    try:
        ops = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception as exc:
        raise DataError(f"{what}: not a readable pickle ({exc})") from None
    if ops - _LITERAL_OPS:
        raise DataError(
            f"{what} refused: a pickle that builds Python objects ({', '.join(sorted(ops - _LITERAL_OPS))}), "
            "which would run code when read"
        )
    try:
        return _LiteralUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise DataError(f"{what}: not a readable pickle ({exc})") from None


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _raw(value) -> bytes | None:
    """An HDF5 attribute as bytes (h5py gives fixed-length strings as bytes, variable ones as str)."""
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def read_pandas_frame(group: h5py.Group, what: str):
    """Columns of a pandas DataFrame written by ``DataFrame.to_hdf`` (format "table" or "fixed"),
    read with h5py only. Returns ``(numeric, pickled, other)``: {name: 1-d array} of the numeric
    columns in file order, the names of columns stored as pickled Python objects (never read), and
    {name: stored type} of the other columns (strings, categories, datetimes; not read). The
    index is not read. ``what`` names the table in errors."""
    kind = _text(group.attrs.get("pandas_type", b""))
    numeric, pickled, other = {}, [], {}
    if kind == "frame_table":
        _table_columns(group, what, numeric, other)
    elif kind == "frame":
        _fixed_columns(group, what, numeric, pickled, other)
    else:
        raise DataError(f"{what}: not a pandas DataFrame written by to_hdf (pandas_type={kind!r})")
    lengths = {len(v) for v in numeric.values()}
    if len(lengths) > 1:
        raise DataError(f"{what}: columns of different lengths {sorted(lengths)}")
    return numeric, pickled, other


def _table_columns(group: h5py.Group, what: str, numeric: dict, other: dict) -> None:
    """The columns of a "table" format frame into ``numeric`` and ``other`` (read_pandas_frame)."""
    if "table" not in group:
        raise DataError(f"{what}: pandas table without its 'table' dataset")
    table = group["table"]
    attrs = table.attrs
    for field in table.dtype.names or ():
        if field == "index":
            continue
        raw = _raw(attrs.get(f"{field}_kind"))
        names = [field] if raw is None else literal_unpickle(raw, f"{what}: attribute {field}_kind")
        if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
            raise DataError(f"{what}: attribute {field}_kind is not a list of column names")
        names = [str(n) for n in names]
        sub = table.dtype[field]
        base = sub.base if sub.subdtype is not None else sub
        stored = _text(attrs.get(f"{field}_dtype", base.name))
        meta = _raw(attrs.get(f"{field}_meta"))  # b"N." (a pickled None) for plain columns
        try:
            plain = np.dtype(stored).kind in "fiu" and base.kind in "fiu" and meta in (None, b"N.")
        except TypeError:
            plain = False
        if not plain:
            other.update({n: stored if meta in (None, b"N.") else f"{stored}, {_text(meta)}" for n in names})
            continue
        values = np.asarray(table.fields([field])[:][field]).reshape(len(table), -1)
        if values.shape[1] != len(names):
            raise DataError(f"{what}: {field} holds {values.shape[1]} columns but names {len(names)}")
        numeric.update({n: values[:, i] for i, n in enumerate(names)})


def _fixed_columns(group: h5py.Group, what: str, numeric: dict, pickled: list, other: dict) -> None:
    """The columns of a "fixed" format frame into ``numeric``, ``pickled`` and ``other`` (read_pandas_frame)."""
    try:
        nblocks = int(group.attrs["nblocks"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{what}: pandas fixed-format frame without 'nblocks'") from None
    for i in range(nblocks):
        items, values = group.get(f"block{i}_items"), group.get(f"block{i}_values")
        if not isinstance(items, h5py.Dataset) or not isinstance(values, h5py.Dataset):
            raise DataError(f"{what}: block {i} of the pandas frame is missing")
        if items.dtype.kind == "O" or _text(group.attrs.get(f"block{i}_items_variety", b"regular")) != "regular":
            raise DataError(f"{what}: the column names of block {i} are pickled or a MultiIndex: refused")
        names = [_text(n) for n in items[()]]
        if values.dtype.kind == "O" or _text(values.attrs.get("PSEUDOATOM", b"")) == "object":
            pickled += names  # a VLArray of pickles: never read
            continue
        value_type = values.attrs.get("value_type")
        if values.dtype.kind not in "fiu" or value_type is not None:
            other.update({n: _text(value_type) if value_type is not None else values.dtype.name for n in names})
            continue
        block = values[()]
        if not int(values.attrs.get("transposed", 0)):
            block = block.T
        if block.ndim != 2 or block.shape[1] != len(names):
            raise DataError(f"{what}: block {i} has shape {block.shape} for {len(names)} columns")
        numeric.update({n: block[:, j] for j, n in enumerate(names)})
