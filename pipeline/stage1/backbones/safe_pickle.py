"""Reads the weights out of a `torch.save`d file without running any code from the file.

Some publishers ship whole pickled models (`torch.save(model)`: HSEmotion / EmotiEffLib, see
`hsemotion.py`). A full, unrestricted unpickling of such a file imports the classes it names
and calls whatever callables the pickle asks for: a crafted file runs arbitrary code
(`os.system`, `builtins.exec`...) on load. `torch.load(weights_only=True)` is safe but refuses
the file, since a module is not a tensor or a container. This module gets the parameters out
anyway, and safely.

A zip-format torch file (torch >= 1.6) holds `<archive>/data.pkl` (the pickle of the object),
`<archive>/data/<key>` (each storage's raw bytes), `<archive>/byteorder` (absent in old files:
little-endian) and `<archive>/version`. `data.pkl` is read by `_InertUnpickler`, a subclass of
`pickle.Unpickler` that never imports a module nor resolves a name from the file:

- `find_class` (every GLOBAL / STACK_GLOBAL / INST / OBJ / EXT* opcode comes through it)
  returns, for every (module, name), a fresh subclass of `_Inert` that only remembers its
  dotted name, except for this short list, all written here or plain stdlib containers:
  `torch._utils._rebuild_tensor_v2`, `_rebuild_tensor`, `_rebuild_parameter`,
  `_rebuild_parameter_with_state` (own versions, below), the `torch.<X>Storage` names (inert
  markers carrying a dtype), `collections.OrderedDict`, and `builtins.set` / `frozenset`
  (own versions); each is wrapped in an `_Allowed` object whose BUILD raises, so a file
  cannot alter them (e.g. reset a function's `__defaults__`). Nothing else is looked up: not
  `os.system`, not `builtins.exec`/`eval`/`getattr`, not the model's class.
- So REDUCE (`callable(*args)`) and NEWOBJ (`cls.__new__(cls, *args)`) on a name from the file
  only build an `_Inert` record of the arguments; BUILD calls `_Inert.__setstate__`, which
  only stores the state; APPENDS / SETITEMS on an `_Inert` only store items. `_Inert` records
  are not callable, and pickle has no opcode for attribute access, so the only callables a
  file can reach are the stand-in classes (calling one makes another record) and the list
  above.
- The own rebuild functions check their arguments (a storage from `persistent_load`, ints,
  matching size/stride lengths, bounds inside the storage) and return `_TensorRef` boxes, not
  tensors, so that a BUILD on them (which torch never writes) raises instead of reaching
  `torch.Tensor.__setstate__`.
- `persistent_load` accepts only `('storage', <storage marker>, key, location, numel)` and
  builds the storage from `data/<key>`'s bytes with `torch.frombuffer` (byte-swapped when the
  file's byteorder is not this machine's); `location` is ignored (everything lands on CPU).

The result is walked as a module tree: a module record's state (its `__dict__`) gives
`_parameters`, `_buffers` (less `_non_persistent_buffers_set`) and `_modules`, flattened into
dotted keys, plus each module's dotted class name (used for architecture checks and error
messages). The class names are strings only: no class is imported.

A dict holding a module under 'state_dict' / 'model' gives that module. A file whose root is
another dict (a state dict, possibly under 'state_dict' / 'model') is handed to
`torch.load(weights_only=True)` instead (torch's own restricted loader; it refuses any global
that is not a tensor type); the same for a file that is not a zip, which is how legacy
(torch < 1.6) state dicts come: a legacy whole-model pickle is refused with advice to re-save it.
Every failure is a `JmtError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import JmtError

# Storage class names torch writes into persistent ids -> element dtype.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
STATE_DICT_KEYS = ("state_dict", "model")   # where training scripts nest a state dict


@dataclass
class WeightsFile:
    """What a weights file holds: a flat state dict and, for a pickled module, its classes."""

    path: Path
    kind: str                                              # 'module' or 'state_dict'
    state: dict[str, torch.Tensor]
    classes: dict[str, str] = field(default_factory=dict)  # module path ('' = root) -> dotted class

    def class_name(self, module: str = "") -> str | None:
        """The short class name of the module at `module` ('' = root), None if unknown."""
        dotted = self.classes.get(module)
        return dotted.rsplit(".", 1)[-1] if dotted else None


# ---------------------------------------------------------------------------------------------
# Inert stand-ins


class _Inert:
    """Stand-in for a name the pickle asks for: records how it was made, does nothing."""

    __slots__ = ("args", "kwargs", "state", "items", "listitems")
    origin = "?"  # the dotted name from the file (set on each subclass)

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.listitems = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): no-op
        pass

    def __setstate__(self, state: Any) -> None:  # BUILD
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on a dict subclass
        self.items[key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on a list subclass
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        self.listitems.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.origin}>"


class _StorageType:
    """Inert marker for `torch.<X>Storage` in a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a storage type")


class _Storage:
    """A storage read from the zip: a 1-D tensor of its elements."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a storage")


class _TensorRef:
    """A rebuilt tensor (or parameter), boxed so that no torch method runs on file data."""

    __slots__ = ("tensor", "is_parameter")

    def __init__(self, tensor: torch.Tensor, is_parameter: bool = False) -> None:
        self.tensor, self.is_parameter = tensor, is_parameter

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a tensor")


# ---------------------------------------------------------------------------------------------
# The few callables a pickle may reach (own versions of torch's)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """A tensor view (size, stride, offset) of a storage, copied out; bounds checked."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor over a {type(storage).__name__}, not a storage")
    if not (_is_int(storage_offset) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(map(_is_int, size + stride))):
        raise pickle.UnpicklingError(f"bad tensor geometry: offset {storage_offset!r}, "
                                     f"size {size!r}, stride {stride!r}")
    if storage_offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"negative tensor geometry: {storage_offset}, {size}, {stride}")
    numel = storage.flat.numel()
    if 0 not in size:  # the last element the view touches must lie inside the storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= numel:
            raise pickle.UnpicklingError(f"tensor of size {size} at offset {storage_offset} "
                                         f"reads past its storage ({numel} elements)")
    view = torch.as_strided(storage.flat, size, stride, storage_offset if numel else 0)
    return _TensorRef(view.clone())  # own memory, contiguous


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    return _rebuild_tensor(storage, storage_offset, size, stride)  # grad flags and hooks: ignored


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"parameter over a {type(data).__name__}, not a tensor")
    return _TensorRef(data.tensor, is_parameter=True)


def _make_set(items: Any = ()) -> set:
    return set(items)


def _make_frozenset(items: Any = ()) -> frozenset:
    return frozenset(items)


class _Allowed:
    """One of the callables a pickle may reach, wrapped so that BUILD cannot alter it (a bare
    function would let BUILD's slot state reset its `__defaults__`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a rebuild function")


_CALLABLES: dict[str, _Allowed] = {
    "torch._utils._rebuild_tensor": _Allowed(_rebuild_tensor),
    "torch._utils._rebuild_tensor_v2": _Allowed(_rebuild_tensor_v2),
    "torch._utils._rebuild_parameter": _Allowed(_rebuild_parameter),
    "torch._utils._rebuild_parameter_with_state": _Allowed(_rebuild_parameter),
    "collections.OrderedDict": _Allowed(OrderedDict),
    "builtins.set": _Allowed(_make_set),
    "builtins.frozenset": _Allowed(_make_frozenset),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol 2 writes these


class _InertUnpickler(pickle.Unpickler):
    """Unpickler whose globals are inert (see the module docstring); storages from the zip."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, swap: bool) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.swap = archive, prefix, swap
        self.storages: dict[str, _Storage] = {}
        self.stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        dotted = f"{module}.{name}"
        if dotted in _CALLABLES:
            return _CALLABLES[dotted]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if dotted not in self.stand_ins:  # a class of its own, so NEWOBJ accepts it
            self.stand_ins[dotted] = type("Inert", (_Inert,), {"__slots__": (), "origin": dotted})
        return self.stand_ins[dotted]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _is_int(pid[4])):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.120}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            self.storages[key] = self._read_storage(storage_type, key, numel)
        return self.storages[key]

    def _read_storage(self, storage_type: _StorageType, key: str, numel: int) -> _Storage:
        name = f"{self.prefix}/data/{key}"
        try:
            raw = self.archive.read(name)
        except KeyError:
            raise _MissingStorage(name) from None
        itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
        if storage_type.name == "UntypedStorage":
            numel = len(raw)  # an untyped storage counts bytes
        if len(raw) != numel * itemsize:
            raise pickle.UnpicklingError(f"{name} has {len(raw)} bytes, expected {numel} x {itemsize}")
        if numel == 0:
            return _Storage(torch.empty(0, dtype=storage_type.dtype))
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)   # (numel * itemsize,)
        if self.swap and itemsize > 1:  # the file's byte order is not ours: reverse each element
            flat = flat.view(-1, itemsize).flip(1).contiguous().view(-1)
        return _Storage(flat.view(storage_type.dtype))              # (numel,)


class _MissingStorage(Exception):
    """A tensor whose storage is not in the zip (reported as a JmtError naming the file)."""


# ---------------------------------------------------------------------------------------------
# Reading a file


def read_weights(path: Path) -> WeightsFile:
    """A whole pickled module (read inertly) or a state dict file (`torch.load(weights_only=True)`)."""
    path = Path(path)
    if not path.is_file():
        raise JmtError(f"{path}: weights file not found")
    if not zipfile.is_zipfile(path):
        return _legacy_state_dict(path)
    root = _read_zip_root(path)
    if isinstance(root, dict):
        for key in STATE_DICT_KEYS:  # {'model': <module>, ...}: the module inside
            if isinstance(root.get(key), _Inert):
                return _module_weights(path, root[key])
        from pipeline.stage1.backbones import read_state_dict  # torch's own weights-only loader

        return WeightsFile(path, "state_dict", read_state_dict(path, "weights"))
    if isinstance(root, _Inert):
        return _module_weights(path, root)
    raise JmtError(f"{path}: holds a {type(root).__name__}, not a torch module or a state dict")


def _read_zip_root(path: Path) -> Any:
    """Unpickles `<archive>/data.pkl` inertly; tensors come back as `_TensorRef`."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)), None)
        if pkl is None:
            raise JmtError(f"{path}: a zip file without <archive>/data.pkl: not a torch.save file")
        prefix = pkl.split("/", 1)[0]
        order = "little"
        if f"{prefix}/byteorder" in names:
            order = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise JmtError(f"{path}: unknown byteorder {order!r}")
        unpickler = _InertUnpickler(archive.read(pkl), archive, prefix, swap=order != sys.byteorder)
        try:
            return unpickler.load()
        except _MissingStorage as exc:
            raise JmtError(f"{path}: a tensor's storage {exc} is missing from the archive "
                           "(truncated or edited file)") from None
        except Exception as exc:  # malformed pickle, bad geometry, unsupported construct
            raise JmtError(f"{path}: cannot read {pkl} safely ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from None


def _module_weights(path: Path, root: _Inert) -> WeightsFile:
    state: dict[str, torch.Tensor] = {}
    classes: dict[str, str] = {}
    try:
        _walk(path, root, "", state, classes, set())
    except RecursionError:
        raise JmtError(f"{path}: modules nested too deep to be a real network") from None
    return WeightsFile(path, "module", state, classes)


def _walk(path: Path, obj: Any, prefix: str, state: dict, classes: dict, on_path: set) -> None:
    """Flattens a module record into `state` (dotted keys) and `classes`."""
    where = prefix or "the pickled object"
    if not isinstance(obj, _Inert):
        raise JmtError(f"{path}: {where} is a {type(obj).__name__}, not a torch module")
    attrs = obj.state[0] if isinstance(obj.state, tuple) and obj.state else obj.state
    if not (isinstance(attrs, dict) and isinstance(attrs.get("_modules"), dict)
            and isinstance(attrs.get("_parameters"), dict)):
        raise JmtError(f"{path}: {where} is a {obj.origin}, not a torch module "
                       "(no _parameters/_modules)")
    if id(obj) in on_path:
        raise JmtError(f"{path}: module {prefix} contains itself")
    on_path = on_path | {id(obj)}
    classes[prefix] = obj.origin
    dot = f"{prefix}." if prefix else ""
    skip = attrs.get("_non_persistent_buffers_set") or set()
    tensors = list(attrs["_parameters"].items())
    tensors += [(k, v) for k, v in (attrs.get("_buffers") or {}).items() if k not in skip]
    for name, value in tensors:
        if value is None:  # e.g. a conv without bias
            continue
        if not isinstance(value, _TensorRef):
            raise JmtError(f"{path}: {dot}{name} is a {getattr(value, 'origin', type(value).__name__)}, "
                           "not a tensor")
        state[f"{dot}{name}"] = value.tensor
    for name, child in attrs["_modules"].items():
        if child is not None:
            _walk(path, child, f"{dot}{name}", state, classes, on_path)


def _legacy_state_dict(path: Path) -> WeightsFile:
    """A non-zip file: only a legacy-format state dict is accepted (torch's weights-only loader)."""
    from pipeline.stage1.backbones import read_state_dict

    try:
        return WeightsFile(path, "state_dict", read_state_dict(path, "weights"))
    except JmtError:
        raise JmtError(
            f"{path}: not a zip-format torch file, and not a state dict torch's weights-only "
            "loader can read: a legacy (torch < 1.6) pickled model, or not a torch file at all. "
            "Re-save it as a state dict on a machine where you trust the file (unpickling it runs "
            "its code; jmt never does)") from None
