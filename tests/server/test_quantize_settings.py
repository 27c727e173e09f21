"""The int8 weight type follows the CPU the graphs are made on (`export.quantize.settings`):
QInt8 where an 8-bit dot product keeps 32-bit sums (VNNI), QUInt8 on AVX2 alone, whose U8S8
kernels saturate; graphs quantized with other settings are not reused."""
from __future__ import annotations

from export.onnx_export import INT8_GRAPHS
from export.quantize import QUANTIZER_VERSION, _reusable, cpuinfo_fields, int8_dot, settings

XEON_VNNI = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bitalg
processor\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bitalg
"""
ALDER_LAKE = "processor\t: 0\nflags\t\t: sse2 avx avx2 fma avx_vnni\n"
EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: sse2 avx avx2 fma sha_ni\n"
# a flag's name elsewhere on the line (not in `flags`) does not count
BUGS_ONLY = "processor\t: 0\nflags\t\t: sse2 avx2\nbugs\t\t: avx512_vnni\n"


def test_vnni_cpus_get_signed_weights():
    assert int8_dot(XEON_VNNI) == "avx512_vnni" and settings(XEON_VNNI)["weight_type"] == "QInt8"
    assert int8_dot(ALDER_LAKE) == "avx_vnni" and settings(ALDER_LAKE)["weight_type"] == "QInt8"


def test_avx2_alone_keeps_unsigned_weights():
    for cpuinfo in (EPYC_AVX2, BUGS_ONLY, ""):
        assert int8_dot(cpuinfo) is None
        assert settings(cpuinfo) == {"weight_type": "QUInt8", "int8_dot": None, "per_channel": True,
                                     "reduce_range": False, "op_types": ["MatMul"]}


def test_cpuinfo_fields_are_the_first_processors():
    assert cpuinfo_fields(XEON_VNNI)["model name"] == "Intel(R) Xeon(R) Processor @ 2.80GHz"
    assert cpuinfo_fields(EPYC_AVX2) == {"processor": "0", "model name": "AMD EPYC 7B12",
                                         "flags": "sse2 avx avx2 fma sha_ni"}
    assert cpuinfo_fields("") == {}


def test_graphs_made_for_another_cpu_are_made_again(tmp_path):
    for name in INT8_GRAPHS.values():
        (tmp_path / name).write_bytes(b"graph")
    recorded = {"quantizer": QUANTIZER_VERSION, "settings": settings(EPYC_AVX2)}
    assert _reusable(recorded, tmp_path, settings(EPYC_AVX2))
    assert not _reusable(recorded, tmp_path, settings(XEON_VNNI))
