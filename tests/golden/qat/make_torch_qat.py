#!/usr/bin/env python3
"""make_torch_qat.py - torch oracle fixtures for common/qat.c.

Run on the GPU machine (torch >= 2.10 for float8_e4m3fn):
    python3 tests/golden/qat/make_torch_qat.py OUTDIR
Writes OUTDIR/qat_fixtures.bin and OUTDIR/qat_fixtures.json.

Binary format (little endian): magic b"DS4QAT1\\0", u32 section count, then
per section: name (32 bytes, NUL padded), u32 element count, count float32
values (raw IEEE bits, NaN payloads kept).

The block simulations are written in torch the way the official DeepSeek V4
kernel.py act_quant(inplace, ue8m0) and fp4_act_quant(inplace) compute them,
in float32: amax = max|x| per block, amax = max(amax, floor), scale =
2^ceil(log2(amax * float32(1/qmax))) taken from the float's bits, then
q = cast(clamp(x / scale, -qmax, qmax)), out = float(q) * scale.
The FP8 cast is torch's own .to(torch.float8_e4m3fn); the E2M1 cast is a
nearest-table-value search with ties to the even code (torch has no float ->
e2m1 cast), written independently of the C implementation.
The Hadamard reference is a float64 matmul with a Sylvester Hadamard matrix
times 128^-0.5, rounded to float32 once.
"""
import hashlib
import json
import math
import os
import struct
import sys

import torch

SEED = 20260511
F32 = torch.float32


def f32(vals):
    return torch.tensor(vals, dtype=F32)


def bits_to_f32(u32_list):
    return torch.tensor(u32_list, dtype=torch.int64).to(torch.int32).view(F32)


def nextafter(t, direction):
    return torch.nextafter(t, torch.full_like(t, direction))


def ceil_pow2_scale(p):
    """2^ceil(log2(p)) from the float32 bits of p (p normal, positive)."""
    b = p.view(torch.int32).to(torch.int64)
    e = (b >> 23) & 0xFF
    m = b & ((1 << 23) - 1)
    k = e - 127 + (m != 0).to(torch.int64)
    return ((k + 127) << 23).to(torch.int32).view(F32)


def fp8_block_ref(x, block):
    """Official act_quant(block, ue8m0, inplace=True) on float32 rows."""
    xb = x.reshape(-1, block)
    amax = xb.abs().amax(dim=1, keepdim=True)
    amax = torch.maximum(amax, f32([1e-4]))
    s = ceil_pow2_scale(amax * f32([1.0 / 448.0]))
    q = torch.clamp(xb / s, -448.0, 448.0).to(torch.float8_e4m3fn)
    return (q.to(F32) * s).reshape(-1)


E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def e2m1_round_ref(x):
    """Nearest E2M1 magnitude (ties to the even code), sign kept, sat 6."""
    a = x.abs().to(torch.float64)
    tab = torch.tensor(E2M1, dtype=torch.float64)
    d = (a.unsqueeze(-1) - tab).abs()
    best = d.min(dim=-1, keepdim=True).values
    cand = d == best
    # among the (at most two) nearest codes prefer the even one
    idx = torch.arange(8)
    score = torch.where(cand, (idx % 2) * 8 + idx, torch.full_like(idx, 100))
    code = score.argmin(dim=-1)
    code = torch.where(a > 6.0, torch.full_like(code, 7), code)
    v = tab[code].to(F32)
    v = torch.copysign(v, x)
    return torch.where(torch.isnan(x), x, v)


def fp4_block_ref(x, block):
    """Official fp4_act_quant(block, inplace=True) on float32 rows."""
    xb = x.reshape(-1, block)
    amax = xb.abs().amax(dim=1, keepdim=True)
    amax = torch.maximum(amax, f32([6.0 * 2.0 ** -126]))
    s = ceil_pow2_scale(amax * f32([1.0 / 6.0]))
    q = e2m1_round_ref(torch.clamp(xb / s, -6.0, 6.0))
    return (q * s).reshape(-1)


def sylvester(n):
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_ref(x):
    rows = x.reshape(-1, 128).to(torch.float64)
    y = rows @ sylvester(128).T * (128 ** -0.5)
    return y.to(F32).reshape(-1)


def fp8_elem_inputs(g):
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    vals = codes.to(F32)
    fin = vals[torch.isfinite(vals)]
    pos = torch.unique(fin[fin >= 0])  # sorted, includes 0
    mids = (pos[1:] + pos[:-1]) / 2  # exact in float32
    parts = [vals, mids, -mids, nextafter(mids, 1e9), nextafter(mids, -1e9),
             -nextafter(mids, 1e9), -nextafter(mids, -1e9)]
    edge = [448.0, 448.0001, 455.9, 456.0, 463.99, 464.0, 464.0001, 470.0,
            479.99, 480.0, 480.0001, 500.0, 1000.0, 1e30, 3.4e38,
            float("inf"), float("-inf"), float("nan"), 0.0, -0.0,
            2.0 ** -9, 2.0 ** -10, 2.0 ** -10 * 1.0000001, 2.0 ** -11,
            3 * 2.0 ** -11, 1e-40, -1e-40, 1e-45, 2.0 ** -126, 2.0 ** -6,
            2.0 ** -6 * 0.99999]
    parts.append(f32(edge))
    parts.append(-f32(edge))
    mag = torch.exp2(torch.rand(1500, generator=g) * 22.0 - 13.0)
    sign = torch.where(torch.rand(1500, generator=g) < 0.5, -1.0, 1.0)
    parts.append((mag * sign).to(F32))
    return torch.cat(parts)


def fp8_block_inputs(g):
    blk = 64
    rows = []
    r = lambda: torch.randn(blk, generator=g, dtype=F32)
    rows.append(r())                                  # plain gaussian
    rows.append(r() * 1000.0)                         # large scale
    rows.append(r() * 1e-3)                           # small scale
    rows.append(r() * 1e-6)                           # amax below 1e-4 floor
    rows.append(torch.zeros(blk, dtype=F32))          # all-zero block
    z = r(); z[::3] = 0.0; z[1] = -0.0; rows.append(z)  # zeros inside
    for k in (-3, 0, 2, 5):                           # amax exactly 448*2^k
        t = r(); t[7] = 448.0 * 2.0 ** k; t = t.clamp(-448.0 * 2.0 ** k,
                                                     448.0 * 2.0 ** k)
        rows.append(t)
        t2 = t.clone(); t2[7] = nextafter(f32([448.0 * 2.0 ** k]), 1e30)[0]
        rows.append(t2)
    # ties: scale 1 (amax 448), values on E4M3 midpoints
    codes = torch.arange(128, dtype=torch.uint8).view(torch.float8_e4m3fn)
    pv = torch.unique(codes.to(F32)[torch.isfinite(codes.to(F32))])
    mids = (pv[1:] + pv[:-1]) / 2
    sel = mids[torch.randint(0, mids.numel(), (blk,), generator=g)]
    sel = torch.where(torch.rand(blk, generator=g) < 0.5, -sel, sel)
    sel[0] = 448.0
    rows.append(sel)
    rows.append(sel * 2.0 ** -20)                     # same ties, tiny scale
    t = r(); t[3] = 1e-40; t[4] = -3e-42; t[5] = 1e-45; rows.append(t)  # subnormals
    t = r() * 1e-4; t[9] = 1e-4; rows.append(t)       # amax == floor
    t = torch.full((blk,), -5.0, dtype=F32); rows.append(t)  # constant
    t = r() * 3e5; rows.append(t)
    for _ in range(8):                                 # mixed random
        rows.append(r() * float(torch.exp2(torch.rand(1, generator=g) * 30 - 15)))
    return torch.cat(rows)


def fp4_elem_inputs(g):
    tab = f32(E2M1)
    mids = (tab[1:] + tab[:-1]) / 2
    parts = [tab, -tab, mids, -mids, nextafter(mids, 1e9), nextafter(mids, -1e9),
             -nextafter(mids, 1e9), -nextafter(mids, -1e9),
             f32([0.0, -0.0, 6.0, 6.5, 7.0, 100.0, 0.1, -0.1, 0.2499, 1e-30]),
             (torch.rand(600, generator=g, dtype=F32) * 14.0 - 7.0)]
    return torch.cat(parts)


def fp4_block_inputs(g, had_out):
    blk = 32
    rows = []
    r = lambda: torch.randn(blk, generator=g, dtype=F32)
    rows.append(r())
    rows.append(torch.zeros(blk, dtype=F32))
    z = r(); z[::4] = 0.0; rows.append(z)
    rows.append(r() * 1e-39)                          # amax below floor
    for k in (-2, 0, 3):
        t = r(); t[5] = 6.0 * 2.0 ** k
        t = t.clamp(-6.0 * 2.0 ** k, 6.0 * 2.0 ** k); rows.append(t)
    mids = (f32(E2M1)[1:] + f32(E2M1)[:-1]) / 2
    sel = mids[torch.randint(0, 7, (blk,), generator=g)]
    sel = torch.where(torch.rand(blk, generator=g) < 0.5, -sel, sel)
    sel[0] = 6.0
    rows.append(sel)
    rows.append(sel * 2.0 ** 10)
    for _ in range(6):
        rows.append(r() * float(torch.exp2(torch.rand(1, generator=g) * 20 - 10)))
    return torch.cat(rows + [had_out])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)

    sec = {}
    x = fp8_elem_inputs(g)
    sec["fp8_in"] = x
    sec["fp8_out_cpu"] = x.to(torch.float8_e4m3fn).to(F32)
    cuda_note = "no cuda"
    if torch.cuda.is_available():
        yc = x.cuda().to(torch.float8_e4m3fn).to(F32).cpu()
        sec["fp8_out_cuda"] = yc
        same = torch.equal(yc.view(torch.int32), sec["fp8_out_cpu"].view(torch.int32))
        cuda_note = "cuda cast bit-identical to cpu: %s (%s)" % (
            same, torch.cuda.get_device_name(0))

    xb = fp8_block_inputs(g)
    sec["fp8blk64_in"] = xb
    sec["fp8blk64_out"] = fp8_block_ref(xb, 64)

    y = fp4_elem_inputs(g)
    sec["fp4_in"] = y
    sec["fp4_out"] = e2m1_round_ref(y)

    h = torch.randn(6 * 128, generator=g, dtype=F32)
    h[128:256] *= 1e3
    h[256:384] = torch.where(torch.rand(128, generator=g) < 0.5, -1.0, 1.0)
    sec["had_in"] = h
    sec["had_out"] = hadamard_ref(h)

    yb = fp4_block_inputs(g, sec["had_out"])
    sec["fp4blk32_in"] = yb
    sec["fp4blk32_out"] = fp4_block_ref(yb, 32)

    blob = bytearray(b"DS4QAT1\0")
    blob += struct.pack("<I", len(sec))
    for name, t in sec.items():
        t = t.contiguous().to(F32)
        nb = name.encode()
        assert len(nb) < 32
        blob += nb + b"\0" * (32 - len(nb))
        blob += struct.pack("<I", t.numel())
        blob += t.view(torch.int32).numpy().astype("<i4").tobytes()
    path = os.path.join(out, "qat_fixtures.bin")
    with open(path, "wb") as f:
        f.write(blob)
    script = open(os.path.abspath(__file__), "rb").read()
    meta = {
        "file": "qat_fixtures.bin",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_check": cuda_note,
        "seed": SEED,
        "script_sha256": hashlib.sha256(script).hexdigest(),
        "sections": {k: int(v.numel()) for k, v in sec.items()},
        "fp8_nan_count_cpu": int(torch.isnan(sec["fp8_out_cpu"]).sum()),
    }
    with open(os.path.join(out, "qat_fixtures.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps(meta, indent=1))
    # a few facts the C side relies on, printed for the record
    probe = f32([448.0, 456.0, 463.99, 464.0, 464.0001, 479.99, 480.0, 1e30,
                 float("inf"), float("nan"), 2.0 ** -10, 3 * 2.0 ** -11])
    print("probe cpu ", probe.tolist())
    print("  ->      ", probe.to(torch.float8_e4m3fn).to(F32).tolist())
    if torch.cuda.is_available():
        print("  -> cuda ", probe.cuda().to(torch.float8_e4m3fn).to(F32).cpu().tolist())
    print("max e4m3", torch.finfo(torch.float8_e4m3fn).max)


if __name__ == "__main__":
    main()
