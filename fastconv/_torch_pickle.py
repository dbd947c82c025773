"""The restricted unpickler behind :func:`fastconv.load_state_dict`.

``torch.save`` pickles a state dict as calls to a few torch functions (the
tensor and parameter rebuilders) whose arguments are plain tuples and ints,
plus *storage records* passed as persistent ids.  This module resolves
exactly those globals to local stand-ins that only record and type-check
what they are given, and refuses every other global by name: nothing named
by the file is imported or called, torch included.

The stand-ins are checked again when arrays are built (``checkpoint.py``),
where the tensor names are known and the checks can name them.
"""
import collections
import io
import pickle
import pickletools

import numpy as np

__all__ = ["CheckpointError", "RefusedGlobalError", "StorageRecord", "TensorRecord",
           "DTYPES", "STORAGE_TYPES", "UNTYPED", "unpickle"]


class CheckpointError(ValueError):
    """The file is not a checkpoint that can be read safely: the message says why."""


class RefusedGlobalError(CheckpointError, pickle.UnpicklingError):
    """The pickle names a global that a tensor state dict never needs.

    A subclass of both :class:`CheckpointError` (so of ``ValueError``) and
    ``pickle.UnpicklingError``; the refused global was not imported or called.
    """


class _Frozen:
    """Base of the stand-ins: no attribute can change after construction.

    A hostile pickle could otherwise apply BUILD (``__setstate__``) to a
    stand-in and rewrite its validated fields.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError(f"refused to set the state of a {type(self).__name__}: "
                              f"torch.save never does that")

    def __setattr__(self, name, value):
        raise CheckpointError(f"{type(self).__name__} is read-only")

    def _init(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)


class DType(_Frozen):
    """A torch dtype: its name, the NumPy dtype of its stored elements and of the result."""

    __slots__ = ("name", "stored", "result")

    def __init__(self, name, stored, result=None):
        stored = np.dtype(stored)
        self._init(name=name, stored=stored, result=stored if result is None else np.dtype(result))

    def __repr__(self):
        return f"torch.{self.name}"


# torch dtype name -> stored elements (native byte order; swapped on load when the file
# says otherwise) and the returned dtype.  NumPy has no bfloat16: its 16 bits are the
# top half of a float32, so it is stored as uint16 and widened exactly to float32.
DTYPES = {d.name: d for d in (
    DType("float16", np.float16), DType("bfloat16", np.uint16, np.float32),
    DType("float32", np.float32), DType("float64", np.float64),
    DType("complex64", np.complex64), DType("complex128", np.complex128),
    DType("int8", np.int8), DType("int16", np.int16), DType("int32", np.int32),
    DType("int64", np.int64), DType("uint8", np.uint8), DType("uint16", np.uint16),
    DType("uint32", np.uint32), DType("uint64", np.uint64),
    DType("bool", np.uint8, np.bool_),
)}
# torch.save names a tensor's storage by one of these classes ("typed" storages); the
# unsigned types wider than 8 bits are saved as untyped bytes plus a dtype instead.
STORAGE_TYPES = {
    "HalfStorage": "float16", "BFloat16Storage": "bfloat16", "FloatStorage": "float32",
    "DoubleStorage": "float64", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "CharStorage": "int8", "ShortStorage": "int16",
    "IntStorage": "int32", "LongStorage": "int64", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
SUPPORTED_NAMES = ", ".join(DTYPES)


class StorageType(_Frozen):
    """Stand-in for ``torch.FloatStorage`` & co.; ``dtype`` None means untyped bytes."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self._init(name=name, dtype=dtype)

    def __repr__(self):
        return f"torch.{self.name}"


UNTYPED = StorageType("UntypedStorage", None)


class StorageRecord(_Frozen):
    """One storage of the file: where its bytes are, how many, what elements they hold.

    ``dtype`` is None for an untyped storage (its tensors give the dtype).
    """

    __slots__ = ("key", "dtype", "nbytes")

    def __init__(self, key, dtype, nbytes):
        self._init(key=key, dtype=dtype, nbytes=nbytes)


class TensorRecord(_Frozen):
    """A tensor as the file describes it: a strided view of a storage, in elements."""

    __slots__ = ("storage", "offset", "shape", "strides", "dtype")

    def __init__(self, storage, offset, shape, strides, dtype):
        self._init(storage=storage, offset=offset, shape=shape, strides=strides, dtype=dtype)


# -- stand-ins for torch's rebuild functions ------------------------------------------------


def _int(value, what):
    if type(value) is not int:
        raise CheckpointError(f"expected {what} to be an int, got {type(value).__name__}")
    return value


def _ints(value, what):
    if not isinstance(value, (tuple, list)):
        raise CheckpointError(f"expected {what} to be a tuple of ints, got "
                              f"{type(value).__name__}")
    return tuple(_int(v, what) for v in value)


def _tensor(storage, offset, size, stride, dtype):
    if not isinstance(storage, StorageRecord):
        raise CheckpointError(f"expected a storage record as the first argument of a tensor, "
                              f"got {type(storage).__name__}")
    shape, strides = _ints(size, "a tensor's size"), _ints(stride, "a tensor's stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"a tensor's size has {len(shape)} entries but its stride "
                              f"{len(strides)}")
    return TensorRecord(storage, _int(offset, "a tensor's storage offset"), shape, strides,
                        dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    """A tensor of a typed storage (torch's usual form); hooks and metadata are ignored."""
    if isinstance(storage, StorageRecord) and storage.dtype is None:
        raise CheckpointError("a tensor of an untyped storage has no dtype "
                              "(torch writes those with _rebuild_tensor_v3)")
    return _tensor(storage, storage_offset, size, stride,
                   getattr(storage, "dtype", None))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """A tensor of untyped bytes with an explicit dtype (torch's form for uint16/32/64)."""
    if not isinstance(dtype, DType):
        raise CheckpointError(f"expected a torch dtype as the 7th argument of "
                              f"_rebuild_tensor_v3, got {type(dtype).__name__}")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """An ``nn.Parameter``: its tensor (the Python state torch may attach is dropped)."""
    if not isinstance(data, TensorRecord):
        raise CheckpointError(f"expected a tensor inside a parameter, got {type(data).__name__}")
    return data


# (module, name) -> what the unpickler gets instead.  Nothing else resolves.
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "UntypedStorage"): UNTYPED,
    ("torch.storage", "UntypedStorage"): UNTYPED,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
_ALLOWED.update({("torch", name): StorageType(name, DTYPES[dtype])
                 for name, dtype in STORAGE_TYPES.items()})
_ALLOWED.update({("torch", name): dtype for name, dtype in DTYPES.items()})


def resolve_global(module, name):
    """The stand-in for ``module.name``, or an error naming it; never imports anything."""
    try:
        return _ALLOWED[(module, name)]
    except (KeyError, TypeError):
        pass
    if module == "torch" and isinstance(name, str) and (
            name.endswith("Storage") or name.startswith(("float", "complex", "bits", "qu", "qi"))):
        raise CheckpointError(f"unsupported torch type torch.{name}: supported tensor dtypes "
                              f"are {SUPPORTED_NAMES}")
    raise RefusedGlobalError(
        f"refused to load global {module}.{name}: a tensor state dict never needs it, and "
        f"resolving it could run code from the file (allowed: torch's tensor and parameter "
        f"rebuild functions, storage types, dtypes and collections.OrderedDict)")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        return resolve_global(module, name)

    def persistent_load(self, pid):
        return self._load_storage(pid)


# Extension codes name globals through copyreg's process-wide registry and cache, which
# a C unpickler may consult without calling find_class; torch.save never writes them.
_REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4"}
# Hashing a tuple nested 10**5 deep overflows the C stack (a segfault, not an
# exception), and a dict key or set item is hashed while unpickling.  A state dict
# nests a handful of levels; the scan refuses anything deeper than this.
MAX_DEPTH = 100
_UPDATES = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}


def _scan(file, what):
    """Walk the opcodes of one pickle without running it, tracking nesting depth.

    Refuses extension-registry opcodes and objects nested deeper than
    ``MAX_DEPTH``, and turns a truncated or malformed pickle into a clear
    error before any object is built.  The stack is simulated with one depth
    per entry, from each opcode's documented stack effect (``pickletools``).
    """
    stack, marks, memo = [], [], {}
    try:
        for opcode, arg, _pos in pickletools.genops(file):
            name = opcode.name
            if name in _REFUSED_OPCODES:
                raise RefusedGlobalError(f"{what}: refused pickle opcode {name} (a global "
                                         f"named through copyreg's extension registry)")
            if name == "MARK":
                marks.append(len(stack))
            elif name in _MEMO_PUTS or name == "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in _MEMO_GETS:
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "READONLY_BUFFER":
                pass                         # flags the buffer on top: same object
            else:
                before = opcode.stack_before
                popped = []
                if pickletools.markobject in before:
                    start = marks.pop()
                    popped, stack[start:] = stack[start:], []
                below = (before.index(pickletools.markobject) if pickletools.markobject in before
                         else len(before))
                if below:
                    if len(stack) < below:
                        raise IndexError("stack underflow")
                    popped, stack[-below:] = stack[-below:] + popped, []
                if opcode.stack_after:
                    if name in _UPDATES:       # adds to the container below: no new level
                        depth = max(popped[0], 1 + max(popped[1:], default=0))
                    else:
                        depth = 1 + max(popped) if popped else 0
                    if depth > MAX_DEPTH:
                        raise CheckpointError(f"{what}: objects nested more than {MAX_DEPTH} "
                                              f"levels deep: refused (a state dict nests a "
                                              f"few levels)")
                    stack.append(depth)
    except CheckpointError:
        raise
    except Exception as exc:  # genops: truncated data, unknown opcodes; the stack: misuse
        raise CheckpointError(f"{what} is truncated or not a valid pickle: "
                              f"{type(exc).__name__}: {exc}") from None


def unpickle(file, load_storage, what):
    """Load one pickle from ``file`` (seekable, binary) with the restricted unpickler.

    ``load_storage(pid)`` maps each persistent id to a :class:`StorageRecord`.
    Any failure becomes a :class:`CheckpointError` whose message starts with ``what``.
    """
    start = file.tell()
    _scan(file, what)
    file.seek(start)
    try:
        return _RestrictedUnpickler(file, load_storage).load()
    except CheckpointError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    except Exception as exc:  # pickle machinery errors, ill-typed calls of OrderedDict, ...
        raise CheckpointError(f"{what} could not be unpickled: "
                              f"{type(exc).__name__}: {exc}") from None


def unpickle_bytes(data, load_storage, what):
    """:func:`unpickle` of an in-memory pickle."""
    return unpickle(io.BytesIO(data), load_storage, what)

