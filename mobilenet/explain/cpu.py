"""The CPU's instruction-set facts that decide how fast INT8 kernels can be.

x86: AVX2 multiplies u8 x s8 pairs into int16 (vpmaddubsw, which saturates); AVX-512 VNNI
and AVX-VNNI add dot-product instructions into int32; AMX adds tile matrix units. ARM: the
dot-product extension (asimddp) and i8mm do the same for NEON. Read from /proc/cpuinfo.
"""
from __future__ import annotations

import platform
from pathlib import Path

# The flags that matter, in the order a sentence names them, with readable names.
X86_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "amx_int8": "AMX-INT8"}
ARM_FLAGS = {"asimd": "NEON", "asimddp": "NEON dot product", "i8mm": "i8mm", "sve": "SVE"}


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(CPU model, flags of the first processor)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def relevant(flags: set[str]) -> tuple[list[str], list[str]]:
    """(present, absent) readable names of the INT8-relevant flags for this architecture."""
    table = ARM_FLAGS if ("asimd" in flags or platform.machine().lower() in ("aarch64", "arm64")) else X86_FLAGS
    present = [name for flag, name in table.items() if flag in flags]
    absent = [name for flag, name in table.items() if flag not in flags]
    return present, absent
