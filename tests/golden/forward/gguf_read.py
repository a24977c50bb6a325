#!/usr/bin/env python3
"""gguf_read.py - a minimal pure-python (numpy) GGUF v3 reader for the
forward-pass oracle: metadata, the tensor table, numpy views of F32/F16/BF16/
I32 tensors and numpy dequantizers for Q8_0, Q2_K, Q4_K and IQ2_XXS.

Written from the format description (header, key/value section, tensor
table, aligned data section); no code of ggml or llama.cpp. The dequantizers
follow the block layouts documented in tests/data/quant-vectors/README.md and
do every step as a separately rounded float32 operation in the same order,
so that they reproduce tests/data/quant-vectors/*.dequant.f32 bit for bit
(`python3 gguf_read.py --selftest` checks that).

Usage as a module:
    g = GGUFFile(path)
    g.kv["deepseek4.block_count"]  -> python value (lists for arrays)
    g.tensors["token_embd.weight"] -> TensorInfo(name, ne, type, offset)
    g.array(name)                  -> float32 / int32 numpy array with shape
                                      reversed(ne) (row-major, ne0 innermost)
"""
import mmap
import os
import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"

# GGML tensor type ids.
T_F32, T_F16, T_Q8_0, T_Q2_K, T_Q4_K, T_IQ2_XXS = 0, 1, 8, 10, 12, 16
T_I32, T_BF16 = 26, 30
TYPE_NAMES = {T_F32: "F32", T_F16: "F16", T_Q8_0: "Q8_0", T_Q2_K: "Q2_K",
              T_Q4_K: "Q4_K", T_IQ2_XXS: "IQ2_XXS", T_I32: "I32",
              T_BF16: "BF16"}
# (elements per block, bytes per block)
BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_I32: (1, 4),
         T_Q8_0: (32, 34), T_Q2_K: (256, 84), T_Q4_K: (256, 144),
         T_IQ2_XXS: (256, 66)}

# GGUF metadata value types: id -> struct format (scalars).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
           7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
VT_STRING, VT_ARRAY = 8, 9


class GGUFError(Exception):
    """A malformed or unsupported GGUF file."""


class TensorInfo:
    """One tensor table entry: ne in GGML order (ne[0] contiguous)."""

    def __init__(self, name, ne, ttype, offset):
        self.name, self.ne, self.type, self.offset = name, ne, ttype, offset

    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    def n_bytes(self):
        be, bb = BLOCK[self.type]
        n = self.n_elements()
        if n % be:
            raise GGUFError("%s: %d elements not a multiple of block %d"
                            % (self.name, n, be))
        return n // be * bb


class _Cursor:
    """Bounds-checked little-endian reader over a bytes-like buffer."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError("truncated file at offset %d (need %d bytes)"
                            % (self.pos, n))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="surrogateescape")

    def value(self, vt):
        if vt in _SCALAR:
            return self.scalar(_SCALAR[vt])
        if vt == VT_STRING:
            return self.string()
        if vt == VT_ARRAY:
            et = self.scalar("<I")
            n = self.scalar("<Q")
            if et in _SCALAR:  # fast path for numeric arrays
                fmt = _SCALAR[et]
                sz = struct.calcsize(fmt)
                raw = self.take(sz * n)
                return list(struct.unpack("<%d%s" % (n, fmt[1]), raw))
            return [self.value(et) for _ in range(n)]
        raise GGUFError("unknown metadata value type %d" % vt)


class GGUFFile:
    """A parsed GGUF file (memory-mapped; tensors are read lazily)."""

    def __init__(self, path):
        self.path = path
        self._fh = open(path, "rb")
        size = os.fstat(self._fh.fileno()).st_size
        self._mm = mmap.mmap(self._fh.fileno(), size, access=mmap.ACCESS_READ)
        c = _Cursor(memoryview(self._mm))
        if bytes(c.take(4)) != GGUF_MAGIC:
            raise GGUFError("%s: not a GGUF file" % path)
        self.version = c.scalar("<I")
        if self.version != 3:
            raise GGUFError("%s: GGUF version %d, expected 3"
                            % (path, self.version))
        n_tensors = c.scalar("<Q")
        n_kv = c.scalar("<Q")
        self.kv, self.kv_types = {}, {}
        for _ in range(n_kv):
            k = c.string()
            vt = c.scalar("<I")
            self.kv[k] = c.value(vt)
            self.kv_types[k] = vt
        self.tensors = {}
        self.order = []
        for _ in range(n_tensors):
            name = c.string()
            nd = c.scalar("<I")
            if nd < 1 or nd > 4:
                raise GGUFError("%s: %d dims" % (name, nd))
            ne = [c.scalar("<Q") for _ in range(nd)]
            tt = c.scalar("<I")
            off = c.scalar("<Q")
            if tt not in BLOCK:
                raise GGUFError("%s: unsupported type %d" % (name, tt))
            if name in self.tensors:
                raise GGUFError("duplicate tensor %s" % name)
            self.tensors[name] = TensorInfo(name, ne, tt, off)
            self.order.append(name)
        align = self.kv.get("general.alignment", 32)
        self.data_start = (c.pos + align - 1) // align * align
        for t in self.tensors.values():
            end = self.data_start + t.offset + t.n_bytes()
            if end > size:
                raise GGUFError("%s: data past end of file" % t.name)

    def raw(self, name):
        """The tensor's bytes as a uint8 numpy view."""
        t = self.tensors[name]
        start = self.data_start + t.offset
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.n_bytes(),
                             offset=start)

    def array(self, name):
        """Tensor as numpy (float32, or int32 for I32), shape reversed(ne)."""
        t = self.tensors[name]
        raw = self.raw(name)
        shape = tuple(reversed(t.ne))
        if t.type == T_F32:
            a = raw.view("<f4")
        elif t.type == T_F16:
            a = raw.view("<f2").astype(np.float32)
        elif t.type == T_BF16:
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif t.type == T_I32:
            a = raw.view("<i4")
        else:
            a = dequantize(t.type, raw, t.n_elements())
        return a.reshape(shape)


# ---- dequantizers (float32 arithmetic, one rounding per operation) ----

def _f16(b):
    """uint8[..., 2] -> float32 values of little-endian halves."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)[..., 0]


def dequant_q8_0(raw, n):
    """Q8_0: per 32 values, f16 scale d and 32 int8: y = d*q."""
    b = raw.reshape(-1, 34)
    d = _f16(b[:, 0:2])
    q = b[:, 2:].view(np.int8).astype(np.float32)
    return (d[:, None] * q).reshape(n)


def dequant_q2_k(raw, n):
    """Q2_K: 256 values: scales[16] (low nibble scale, high nibble min),
    qs[64] 2-bit values, f16 d, f16 dmin. Value i of half h (128 values),
    shift s (0..3), lane l (0..31) is bits 2s of qs[32h+l]; its sub-block of
    16 uses scales[8h + 2s + l//16]."""
    b = raw.reshape(-1, 84)
    nb = b.shape[0]
    sc = b[:, 0:16]
    qs = b[:, 16:80].reshape(nb, 2, 1, 32)
    d = _f16(b[:, 80:82])
    dmin = _f16(b[:, 82:84])
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = ((qs >> shifts) & 3).astype(np.float32)           # [nb, 2, 4, 32]
    scs = sc.reshape(nb, 2, 4, 2)                          # [nb, h, s, l//16]
    dl = d[:, None, None, None] * (scs & 0xF).astype(np.float32)
    ml = dmin[:, None, None, None] * (scs >> 4).astype(np.float32)
    dl = np.repeat(dl, 16, axis=3)
    ml = np.repeat(ml, 16, axis=3)
    return (dl * q - ml).reshape(n)


def _k4_scale_min(s):
    """Q4_K's 12 packed bytes -> (scale[8], min[8]) 6-bit values."""
    s = s.astype(np.uint16)
    sc = np.empty(s.shape[:-1] + (8,), dtype=np.uint16)
    mn = np.empty_like(sc)
    for j in range(8):
        if j < 4:
            sc[..., j] = s[..., j] & 63
            mn[..., j] = s[..., j + 4] & 63
        else:
            sc[..., j] = (s[..., j + 4] & 0xF) | ((s[..., j - 4] >> 6) << 4)
            mn[..., j] = (s[..., j + 4] >> 4) | ((s[..., j] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


def dequant_q4_k(raw, n):
    """Q4_K: 256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins,
    qs[128]. Chunk c (64 values) uses qs[32c..32c+31]: low nibbles with
    scale/min 2c, high nibbles with 2c+1: y = d*sc*q - dmin*m."""
    b = raw.reshape(-1, 144)
    nb = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, mn = _k4_scale_min(b[:, 4:16])
    qs = b[:, 16:144].reshape(nb, 4, 1, 32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2).astype(np.float32)
    dd = (d[:, None] * sc).reshape(nb, 4, 2, 1)
    mm = (dmin[:, None] * mn).reshape(nb, 4, 2, 1)
    return (dd * q - mm).reshape(n)


_IQ2_TABLES = None


def _iq2_tables():
    """The IQ2_XXS grid (256 x 8 magnitudes) and sign table (128 bytes),
    read from the data files in tests/data/quant-vectors/."""
    global _IQ2_TABLES
    if _IQ2_TABLES is None:
        here = os.path.dirname(os.path.abspath(__file__))
        qv = os.path.join(here, "..", "..", "data", "quant-vectors")
        with open(os.path.join(qv, "iq2xxs_grid.txt")) as f:
            grid = [int(x, 16) for x in f.read().split()]
        with open(os.path.join(qv, "ksigns_iq2xs.txt")) as f:
            signs = [int(x) for x in f.read().split()]
        g = np.array(grid, dtype="<u8").view(np.uint8).reshape(-1, 8)
        _IQ2_TABLES = (g.astype(np.float32), np.array(signs, dtype=np.uint8))
    return _IQ2_TABLES


def dequant_iq2_xxs(raw, n):
    """IQ2_XXS: 256 values: f16 d, then 8 groups of 32 as two u32: the
    first holds 4 grid indices (bytes), the second 4 x 7-bit sign-pattern
    indices and a 4-bit scale s: y = d*(0.5+s)*0.25 * grid * sign."""
    grid, ksigns = _iq2_tables()
    b = raw.reshape(-1, 66)
    nb = b.shape[0]
    d = _f16(b[:, 0:2])
    w = np.ascontiguousarray(b[:, 2:66]).view("<u4").reshape(nb, 8, 2)
    idx = np.ascontiguousarray(w[:, :, 0]).view(np.uint8).reshape(nb, 8, 4)
    a1 = w[:, :, 1]
    db = d[:, None] * (np.float32(0.5) + (a1 >> 28).astype(np.float32))
    db = db * np.float32(0.25)                              # [nb, 8]
    sidx = np.stack([(a1 >> (7 * l)) & 127 for l in range(4)], axis=2)
    sbits = ksigns[sidx]                                    # [nb, 8, 4]
    mask = (sbits[..., None] >> np.arange(8, dtype=np.uint8)) & 1
    sign = np.where(mask == 1, np.float32(-1), np.float32(1))
    g = grid[idx]                                           # [nb, 8, 4, 8]
    return (db[:, :, None, None] * g * sign).astype(np.float32).reshape(n)


_DEQ = {T_Q8_0: dequant_q8_0, T_Q2_K: dequant_q2_k, T_Q4_K: dequant_q4_k,
        T_IQ2_XXS: dequant_iq2_xxs}


def dequantize(ttype, raw, n):
    """Dequantize n elements of type ttype from raw bytes to float32."""
    if ttype not in _DEQ:
        raise GGUFError("no dequantizer for type %d" % ttype)
    return _DEQ[ttype](np.asarray(raw, dtype=np.uint8), n).astype(np.float32)


def _selftest():
    """Bit-exact check of the dequantizers against the reference vectors."""
    here = os.path.dirname(os.path.abspath(__file__))
    qv = os.path.join(here, "..", "..", "data", "quant-vectors")
    ok = True
    for tname, tt in (("q8_0", T_Q8_0), ("q2_K", T_Q2_K), ("q4_K", T_Q4_K),
                      ("iq2_xxs", T_IQ2_XXS)):
        raw = np.fromfile(os.path.join(qv, tname + ".blocks.bin"), np.uint8)
        ref = np.fromfile(os.path.join(qv, tname + ".dequant.f32"), "<f4")
        got = dequantize(tt, raw, ref.size)
        same = np.array_equal(got.view(np.uint32), ref.view(np.uint32))
        print("%-8s %s (%d values, max abs diff %g)"
              % (tname, "bit-exact" if same else "MISMATCH", ref.size,
                 float(np.max(np.abs(got - ref)))))
        ok &= bool(same)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--selftest":
        sys.exit(_selftest())
    if len(sys.argv) == 2:
        g = GGUFFile(sys.argv[1])
        for k, v in g.kv.items():
            if isinstance(v, list) and len(v) > 8:
                v = "[%d items]" % len(v)
            print("%s = %s" % (k, v))
        for name in g.order:
            t = g.tensors[name]
            print("%-44s %-8s %s" % (name, TYPE_NAMES.get(t.type, t.type),
                                     t.ne))
        sys.exit(0)
    print("usage: gguf_read.py MODEL.gguf | --selftest", file=sys.stderr)
    sys.exit(2)
