"""Run LiteRT's int8 and float kernels as a CPU without AVX-512 would: a measurement aid for benchmarks only.

XNNPACK (LiteRT's CPU backend) picks its kernels from the CPU's instruction sets, read once into a
``hardware_config`` structure whose ``arch_flags`` word has one bit per instruction-set level. Bits 0-7 are the
levels up to AVX2 and FMA3 (SSSE3, SSE4.1, AVX, F16C, FMA3, AVX2, plus two always-set bits); the bits above are
AVX-512 (F, SKX, VBMI, VNNI, BF16, ...), AVX-VNNI and AMX. :func:`limit_to_avx2` clears the bits above AVX2
before any kernel family is configured, so every network loaded afterwards runs the kernels an AVX2-only CPU
(a common cloud or desktop x86 CPU) gets. The host must have AVX2 itself.

It finds the structure through the symbol table of LiteRT's shared library (``xnn_init_hardware_config``
returns its address; ``hardware_config`` is the symbol that address must match), so it works only with a LiteRT
build that keeps that table (the PyPI wheels of ai-edge-litert 2.x do) and checks the layout before writing.
Checked on 2026-12-02 on a 2-core AMD EPYC with AVX-512 against a real AVX2-only 2-core AMD EPYC (docs/speed.md):
under this limit ``fast`` ran 1,166 faces/s here against 1,151-1,161 there, ``accurate`` 131 against 121.

Nothing in ``fer_batch`` uses this: the tool always runs the best kernels the CPU has.
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

AVX2_LEVELS = 0xFF  # arch_flags bits XNNPACK sets on a CPU with AVX2 and FMA3 and nothing newer
ARCH_FLAGS_OFFSET = 8  # bytes into struct xnn_hardware_config (XNNPACK as built into ai-edge-litert 2.x)
LIBRARY_NAME = "libpywrap_litert_common.so"  # the ai-edge-litert library that carries XNNPACK


class EmulationError(RuntimeError):
    """The kernels could not be limited (another LiteRT build, a CPU without AVX2, or too late in the process)."""


def _symbols(path: Path, wanted: set[str]) -> dict[str, int]:
    """Values of the ``wanted`` names in an ELF64 file's static symbol table (``.symtab``)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise EmulationError(f"{path} is not a 64-bit ELF library")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found: dict[str, int] = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strings_offset = sections[link][4]
        for start in range(offset, offset + size, entsize):
            name_at, _info_byte, _other, _shndx, value, _size = struct.unpack_from("<IBBHQQ", data, start)
            end = data.index(b"\0", strings_offset + name_at)
            name = data[strings_offset + name_at:end].decode("ascii", "replace")
            if name in wanted:
                found[name] = value
    return found


def _loaded_library() -> tuple[Path, int]:
    """LiteRT's library as this process mapped it: its path and load address."""
    import ai_edge_litert.interpreter  # noqa: F401, PLC0415 - maps the library into the process

    with open("/proc/self/maps") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 6 and fields[5].endswith("/" + LIBRARY_NAME) and int(fields[2], 16) == 0:
                return Path(fields[5]), int(fields[0].split("-")[0], 16)
    raise EmulationError(f"{LIBRARY_NAME} is not loaded (is ai-edge-litert 2.x installed?)")


def limit_to_avx2() -> str:
    """Make XNNPACK in this process choose its AVX2 kernels; call before loading any network. Returns a note."""
    path, base = _loaded_library()
    symbols = _symbols(path, {"xnn_init_hardware_config", "hardware_config"})
    if len(symbols) != 2:
        raise EmulationError(f"{path.name} has no symbol table for XNNPACK's hardware config (another build?)")
    init = ctypes.CFUNCTYPE(ctypes.c_void_p)(base + symbols["xnn_init_hardware_config"])
    address = init()
    if address != base + symbols["hardware_config"]:
        raise EmulationError("XNNPACK's hardware config is not where its symbol says: not a known LiteRT build")
    flags = ctypes.c_uint64.from_address(address + ARCH_FLAGS_OFFSET)
    if flags.value & AVX2_LEVELS != AVX2_LEVELS:
        raise EmulationError(f"this CPU lacks AVX2 or FMA3 (XNNPACK flags {flags.value:#x}): nothing to emulate")
    before = flags.value
    flags.value = before & AVX2_LEVELS
    return f"XNNPACK kernels limited to AVX2 (flags {before:#x} -> {flags.value:#x})"
