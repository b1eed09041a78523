"""Where a benchmark's figures came from: the host's fingerprint, in the JSON and the printed header.

Two runs are comparable only on comparable hosts: the same CPU model can be a different machine (an
instance type without AVX-512, a throttled share), so the fingerprint also lists the instruction-set
flags that decide which kernels torch picks, the measured matmul peak and the thread count.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The /proc/cpuinfo flags that change which fp32/bf16 kernels oneDNN and torch choose.
FLAGS_OF_INTEREST = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_tile", "amx_bf16", "amx_int8")


def cpu_info(text: str | None = None) -> tuple[str, list[str]]:
    """The CPU model name and the flags of interest it has, from /proc/cpuinfo (or `text`)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: the model from platform, flags unknown
            return platform.processor() or platform.machine(), []
    model, flags = "", set()
    for line in text.splitlines():  # one block per logical CPU; the first says it for all
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), [flag for flag in FLAGS_OF_INTEREST if flag in flags]


def fingerprint(device: str, peaks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """CPU model, flags of interest, logical CPUs, torch threads, versions and each measured matmul peak."""
    import torch
    import transformers

    model, flags = cpu_info()
    found: dict[str, Any] = {
        "cpu_model": model,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "matmul_peak_gflops": {when: peak["gflops"] for when, peak in peaks.items()},
    }
    if device == "cuda":
        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def describe(fp: dict[str, Any]) -> str:
    """The fingerprint as the one header line the report prints."""
    peaks = ", ".join(f"{when} {gflops:.1f}" for when, gflops in fp["matmul_peak_gflops"].items())
    text = (f"{fp['cpu_model']}, {fp['logical_cpus']} logical CPUs, {fp['threads']} threads, "
            f"flags: {' '.join(fp['cpu_flags']) or 'none of interest'}, torch {fp['torch']}, "
            f"transformers {fp['transformers']}")
    if fp.get("gpu"):
        text += f", GPU {fp['gpu']}"
    return text + (f"; matmul peak GFLOP/s: {peaks}" if peaks else "")
