"""Argument checking and error mapping, on a 1-rank communicator in the test process, plus
the DLPack import path without torch (numpy's __dlpack__ and a hand-made capsule)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import dmsc
from conftest import free_port


class DLPackOnly:
    """Only the DLPack protocol of an array (no buffer protocol)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


# --- a DLPack producer written with ctypes: bfloat16 without torch --------------------------


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]
_CAPSULE_NAME = b"dltensor"
_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeTensor:
    """A legacy (unversioned) DLPack producer over a numpy array's memory, with any DLPack
    type code, device and strides. Counts the deleter calls."""

    def __init__(self, storage: np.ndarray, code: int, bits: int, device=(1, 0), shape=None, strides=None):
        self.storage = storage
        self.code, self.bits, self.device = code, bits, device
        self.shape = (ctypes.c_int64 * 8)(*(shape or storage.shape))
        self.ndim = len(shape or storage.shape)
        self.strides = None if strides is None else (ctypes.c_int64 * 8)(*strides)
        self.deleted = 0
        self._keep = []

        def deleter(_m):
            self.deleted += 1

        self._deleter = _DELETER(deleter)

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None):  # no max_version: exercises the fallback to the legacy capsule
        self.stream = stream
        m = _DLManagedTensor()
        t = m.dl_tensor
        t.data = self.storage.ctypes.data
        t.device = _DLDevice(*self.device)
        t.ndim = self.ndim
        t.dtype = _DLDataType(self.code, self.bits, 1)
        t.shape = ctypes.cast(self.shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = ctypes.cast(self.strides, ctypes.POINTER(ctypes.c_int64)) if self.strides else None
        t.byte_offset = 0
        m.deleter = self._deleter
        self._keep.append(m)
        return _PyCapsule_New(ctypes.addressof(m), _CAPSULE_NAME, None)


def bf16_bits(x) -> np.ndarray:
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_bfloat16_through_a_handmade_dlpack_capsule(comm1):
    src = FakeTensor(bf16_bits([1.5, 2.0, -3.0, 0.25]), code=4, bits=16)
    dst_mem = np.zeros(4, np.uint16)
    dst = FakeTensor(dst_mem, code=4, bits=16)
    comm1.all_reduce(src, dmsc.ReduceOp.AVG, out=dst)
    assert np.array_equal(dst_mem, bf16_bits([1.5, 2.0, -3.0, 0.25]))
    assert src.deleted == 1 and dst.deleted == 1, "the consumer must call each deleter once"
    with pytest.raises(dmsc.InvalidArgument, match="out has element type float but tensor has bfloat16"):
        comm1.all_reduce(src, out=np.zeros(4, np.float32))
    assert src.deleted == 2
    w = comm1.all_gather(src, out=dst, async_op=True)
    assert w.wait() is True
    del w
    assert src.deleted == 3


def test_dlpack_errors_name_the_argument(comm1):
    opencl = FakeTensor(np.zeros(4, np.float32), code=2, bits=32, device=(4, 0))
    with pytest.raises(dmsc.InvalidArgument, match=r"tensor is on device opencl:0 .*CPU or a CUDA"):
        comm1.all_reduce(opencl)
    strided = FakeTensor(np.zeros(4, np.float32), code=2, bits=32, shape=(2, 2), strides=(1, 2))
    with pytest.raises(dmsc.InvalidArgument, match="tensor is not contiguous"):
        comm1.all_reduce(strided)
    assert strided.deleted == 1
    bad = FakeTensor(np.zeros(4, np.uint8), code=6, bits=8)
    with pytest.raises(dmsc.InvalidArgument, match="bool8"):
        comm1.broadcast(bad)

    class Broken:
        def __dlpack__(self, **kw):
            raise RuntimeError("no export today")

    with pytest.raises(dmsc.InvalidArgument, match="tensor: its __dlpack__.. failed: no export today"):
        comm1.all_reduce(Broken())


def test_dlpack_only_numpy(comm1):
    for dt in (np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64, np.float16, np.float32, np.float64):
        a = np.arange(6).astype(dt)
        out = np.zeros(6, dt)
        comm1.all_reduce(DLPackOnly(a), out=DLPackOnly(out))
        assert np.array_equal(out, a)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(dmsc.InvalidArgument, match="tensor is read-only"):
        comm1.all_reduce(DLPackOnly(ro))
    with pytest.raises(dmsc.InvalidArgument, match="out is read-only"):
        comm1.all_reduce(np.zeros(4, np.float32), out=DLPackOnly(ro))


def test_non_contiguous(comm1):
    m = np.zeros((4, 4), np.float32)
    with pytest.raises(dmsc.InvalidArgument, match="tensor is not contiguous"):
        comm1.all_reduce(m[:, 1])
    with pytest.raises(dmsc.InvalidArgument, match="out is not contiguous"):
        comm1.all_reduce(np.zeros(4, np.float32), out=m[:, 1])
    with pytest.raises(dmsc.InvalidArgument, match="tensor is not contiguous"):
        comm1.send(m.T, 0)
    with pytest.raises(dmsc.InvalidArgument, match="input is not contiguous"):
        comm1.all_to_all_v(np.zeros(4, np.float32), m[:, 1])


def test_read_only_outputs_and_in_place_targets(comm1):
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    for call in (
        lambda: comm1.all_reduce(ro),
        lambda: comm1.reduce_scatter(ro),
        lambda: comm1.all_gather(ro),
        lambda: comm1.reduce(ro),
        lambda: comm1.all_to_all(ro),
        lambda: comm1.recv(ro, 0),
    ):
        with pytest.raises(dmsc.InvalidArgument, match="tensor is read-only"):
            call()
    with pytest.raises(dmsc.InvalidArgument, match="tensor is read-only"):
        comm1.all_reduce(b"abcd")
    with pytest.raises(dmsc.InvalidArgument, match="tensor is read-only"):
        comm1.all_reduce(memoryview(b"abcd"))
    with pytest.raises(dmsc.InvalidArgument, match="out is read-only"):
        comm1.all_reduce(np.zeros(4, np.float32), out=ro)
    with pytest.raises(dmsc.InvalidArgument, match="out is read-only"):
        comm1.send_recv(np.zeros(4, np.float32), 0, ro, 0)
    with pytest.raises(dmsc.InvalidArgument, match="output is read-only"):
        comm1.all_to_all_v(ro, np.zeros(4, np.float32))
    # Read-only inputs are fine where nothing is written.
    out = np.zeros(4, np.float32)
    comm1.all_reduce(ro, out=out)
    comm1.broadcast(ro, 0)  # the root only reads in place
    comm1.all_reduce(b"abcd", out=bytearray(4))


def test_mismatched_dtypes(comm1):
    with pytest.raises(dmsc.InvalidArgument, match="out has element type double but tensor has float"):
        comm1.all_reduce(np.zeros(4, np.float32), out=np.zeros(4, np.float64))
    with pytest.raises(dmsc.InvalidArgument, match="out has element type"):
        comm1.all_gather(np.zeros(4, np.int32), out=np.zeros(4, np.uint32))
    with pytest.raises(dmsc.InvalidArgument, match="output has element type int64 but input has int32"):
        comm1.all_to_all_v(np.zeros(4, np.int64), np.zeros(4, np.int32))
    with pytest.raises(dmsc.InvalidArgument, match="out has element type"):
        comm1.send_recv(np.zeros(4, np.int8), 0, np.zeros(4, np.uint8), 0)


def test_unknown_ops(comm1):
    a = np.zeros(4, np.float32)
    for op in ("bnot", "", 3, object(), None.__class__):
        with pytest.raises(dmsc.InvalidArgument, match="op .* is not a supported reduction"):
            comm1.all_reduce(a, op)

    class TorchLike:
        name = "BNOT"

    with pytest.raises(dmsc.InvalidArgument, match="op"):
        comm1.reduce(a, 0, TorchLike())

    class TorchSum:
        name = "SUM"

    comm1.all_reduce(a, TorchSum())
    for name in ("sum", "PRODUCT", "prod", "Min", "max", "avg"):
        comm1.all_reduce(a, name)
        comm1.reduce_scatter(a, op=name)


def test_unsupported_types_and_objects(comm1):
    for a in (np.zeros(4, np.int16), np.zeros(4, bool), np.zeros(4, np.complex64), np.zeros(2, ">f4")):
        with pytest.raises(dmsc.InvalidArgument, match="tensor has element format"):
            comm1.all_reduce(a)
    for obj in ([1.0, 2.0], 3, "abc", None):
        with pytest.raises(dmsc.InvalidArgument, match="tensor must be a buffer"):
            comm1.all_reduce(obj)


def test_misaligned_buffer(comm1):
    raw = np.zeros(9, np.uint8)
    mis = raw[1:].view(np.float32)
    with pytest.raises(dmsc.InvalidArgument, match="tensor at 0x[0-9a-f]+ is not aligned"):
        comm1.all_reduce(mis)


def test_sizes_overlap_roots_peers(comm1):
    f = np.float32
    with pytest.raises(dmsc.InvalidArgument, match="out has 5 elements but tensor has 4"):
        comm1.all_reduce(np.zeros(4, f), out=np.zeros(5, f))
    with pytest.raises(dmsc.InvalidArgument, match="out has 5 elements but all_gather needs"):
        comm1.all_gather(np.zeros(4, f), out=np.zeros(5, f))
    with pytest.raises(dmsc.InvalidArgument, match="tensor has 4 elements but reduce_scatter needs"):
        comm1.reduce_scatter(np.zeros(4, f), out=np.zeros(5, f))
    a = np.zeros(8, f)
    with pytest.raises(dmsc.InvalidArgument, match="tensor and out overlap"):
        comm1.all_reduce(a[:4], out=a[2:6])
    with pytest.raises(dmsc.InvalidArgument, match="input and output overlap"):
        comm1.all_to_all_v(a[:4], a[2:6])
    with pytest.raises(dmsc.InvalidArgument, match="root 1 is out of range"):
        comm1.broadcast(a, 1)
    with pytest.raises(dmsc.InvalidArgument, match="root -1 is out of range"):
        comm1.reduce(a, root=-1)
    with pytest.raises(dmsc.InvalidArgument, match="dst 3 is out of range"):
        comm1.send(a, 3)
    with pytest.raises(dmsc.InvalidArgument, match="src 1 is out of range"):
        comm1.recv(a, 1)
    with pytest.raises(dmsc.InvalidArgument, match="input_split_sizes has 2 entries, expected one per rank"):
        comm1.all_to_all_v(np.zeros(4, f), np.zeros(4, f), [4], [2, 2])
    with pytest.raises(dmsc.InvalidArgument, match=r"output_split_sizes \[3\] do not add up to the 4 rows"):
        comm1.all_to_all_v(np.zeros(4, f), np.zeros(4, f), [3], [4])
    with pytest.raises(dmsc.InvalidArgument, match="input_split_sizes entry must not be negative"):
        comm1.all_to_all_v(np.zeros(4, f), np.zeros(4, f), [4], [-1])
    # Sending to oneself needs a matching receive in the same group.
    with pytest.raises(dmsc.InvalidArgument, match="send"):
        comm1.send(a, 0)
    out = np.zeros(8, f)
    comm1.send_recv(np.arange(8, dtype=f), 0, out, 0)
    assert np.array_equal(out, np.arange(8, dtype=f))
    # Out of place with out= being tensor itself is in place.
    b = np.arange(4, dtype=f)
    comm1.all_reduce(b, out=b)
    assert np.array_equal(b, np.arange(4, dtype=f))


def test_work_and_constructor_arguments(comm1):
    w = comm1.barrier(async_op=True)
    with pytest.raises(dmsc.InvalidArgument, match="timeout must be a non-negative"):
        w.wait(timeout=-1)
    assert w.wait(timeout=10) is True and w.is_completed()
    assert "completed" in repr(w)
    with pytest.raises(dmsc.InvalidArgument, match="exactly one of store_addr and unique_id"):
        dmsc.Communicator(0, 1)
    with pytest.raises(dmsc.InvalidArgument, match="exactly one of store_addr and unique_id"):
        dmsc.Communicator(0, 1, store_addr="127.0.0.1:1", unique_id=bytes(128))
    with pytest.raises(dmsc.InvalidArgument, match="not a valid dmsc unique id"):
        dmsc.Communicator(0, 1, unique_id=bytes(128))
    with pytest.raises(dmsc.InvalidArgument, match="rank must not be negative"):
        dmsc.Communicator(-1, 1, store_addr="127.0.0.1:1")
    with pytest.raises(dmsc.InvalidArgument, match="rank 2 is out of range for 2 ranks"):
        dmsc.Communicator(2, 2, store_addr="127.0.0.1:1")
    with pytest.raises(dmsc.InvalidArgument, match="timeout must be a positive"):
        dmsc.Communicator(0, 1, store_addr="127.0.0.1:1", timeout=0)


def test_destroy_abort_and_exceptions():
    c = dmsc.Communicator(0, 1, store_addr=f"127.0.0.1:{free_port()}")
    assert (c.rank, c.size) == (0, 1) and c.transport in ("tcp-uring", "tcp-socket")
    c.abort()
    c.abort()
    with pytest.raises(dmsc.Aborted) as e:
        c.barrier()
    assert e.value.kind == "Aborted" and str(e.value).startswith("aborted: ")
    c.destroy()
    c.destroy()
    with pytest.raises(dmsc.InvalidUsage, match="destroyed"):
        c.all_reduce(np.zeros(1))
    for cls in (dmsc.InvalidArgument, dmsc.InvalidUsage, dmsc.Timeout, dmsc.Mismatch, dmsc.PeerLost,
                dmsc.RemoteError, dmsc.Aborted, dmsc.SystemCallError, dmsc.ProtocolError, dmsc.InternalError):
        assert issubclass(cls, dmsc.DmscError) and cls.__module__ == "dmsc"
    ops = [dmsc.ReduceOp.SUM, dmsc.ReduceOp.PRODUCT, dmsc.ReduceOp.MIN, dmsc.ReduceOp.MAX, dmsc.ReduceOp.AVG]
    assert [o.name for o in ops] == ["SUM", "PRODUCT", "MIN", "MAX", "AVG"]
    assert [int(o) for o in ops] == [0, 1, 2, 3, 4]
    assert dmsc.ReduceOp.SUM == dmsc.ReduceOp.SUM and dmsc.ReduceOp.SUM != dmsc.ReduceOp.MAX


def test_single_rank_semantics(comm1):
    a = np.arange(6, dtype=np.float64)
    comm1.all_reduce(a, dmsc.ReduceOp.AVG)
    assert np.array_equal(a, np.arange(6))
    out = np.zeros(6)
    comm1.all_gather(a, out=out)
    assert np.array_equal(out, a)
    comm1.all_to_all_v(out, a)
    assert np.array_equal(out, a)
    w = comm1.all_reduce(a, async_op=True)
    assert isinstance(w, dmsc.Work) and w.wait()
    assert comm1.split(None) is None


# --- CUDA tensors without a GPU: FAKE producers over host memory ----------------------------


class FakeCudaArray:
    """A FAKE CUDA array: host memory (a numpy array's) described by
    __cuda_array_interface__ (version 3), as CuPy describes its device arrays. dmsc parses it,
    then asks the CUDA driver which device the pointer is on, which fails clearly here."""

    def __init__(self, storage: np.ndarray, typestr=None, strides=None, stream=None, readonly=False, drop=()):
        self.storage = storage
        cai = {
            "data": (storage.ctypes.data, readonly),
            "shape": storage.shape,
            "typestr": typestr or storage.dtype.str,
            "strides": strides,
            "version": 3,
            "stream": stream,
        }
        for k in drop:
            del cai[k]
        self.__cuda_array_interface__ = cai


def test_cuda_array_interface_is_parsed_and_its_errors_name_the_argument(comm1):
    a = np.zeros(8, np.float32)
    with pytest.raises(dmsc.InvalidArgument, match="tensor has element type '<c8'"):
        comm1.all_reduce(FakeCudaArray(np.zeros(4, np.complex64)))
    with pytest.raises(dmsc.InvalidArgument, match="tensor is not contiguous"):
        comm1.all_reduce(FakeCudaArray(a.reshape(2, 4), strides=(4, 8)))
    with pytest.raises(dmsc.InvalidArgument, match="tensor: __cuda_array_interface__ has no 'data'"):
        comm1.all_reduce(FakeCudaArray(a, drop=("data",)))
    with pytest.raises(dmsc.InvalidArgument, match="'stream' is not an integer"):
        comm1.all_reduce(FakeCudaArray(a, stream="s"))
    with pytest.raises(dmsc.InvalidArgument, match="out is read-only"):
        comm1.all_reduce(np.zeros(8, np.float32), out=FakeCudaArray(a, readonly=True))
    # A well-formed one gets as far as the driver: without a GPU, a clear error that says why.
    with pytest.raises(dmsc.DmscError, match=r"tensor.*CUDA.*(driver|cuda. feature)"):
        comm1.all_reduce(FakeCudaArray(a, stream=7))


def test_a_cuda_dlpack_tensor_is_exported_for_a_stream_and_mixing_it_with_host_memory_names_both(comm1):
    gpu = FakeTensor(np.zeros(4, np.float32), code=2, bits=32, device=(2, 0))
    with pytest.raises(dmsc.InvalidArgument, match="tensor is CUDA device 0 memory but out is host memory"):
        comm1.all_reduce(gpu, out=np.zeros(4, np.float32))
    # Not a torch or CuPy tensor: exported for the legacy default stream (DLPack's 1).
    assert gpu.stream == 1 and gpu.deleted == 1
    # All on the device: the call needs the CUDA device, which cannot be opened here.
    out = FakeTensor(np.zeros(4, np.float32), code=2, bits=32, device=(2, 0))
    with pytest.raises(dmsc.DmscError, match=r"CUDA device 0"):
        comm1.all_reduce(gpu, out=out)
