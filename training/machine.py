"""What a machine offers a run: CPU threads, memory, CUDA GPUs, Apple's GPU.

Two ways to read it, one description: `Machine.from_torch()` is what a training process sees (the
truth at run time); `Machine.probe()` asks the operating system and nvidia-smi without importing
torch, for the Train page's hint, which must open before torch loads (a cold import costs ~9 s).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
import subprocess

BF16_COMPUTE_CAPABILITY = 8.0  # Ampere and newer run bf16 natively


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One CUDA GPU."""

    name: str
    memory_gib: float
    bf16: bool  # supports bf16 natively


@dataclasses.dataclass(frozen=True)
class Machine:
    """The hardware a run would get."""

    cpu_threads: int  # threads torch runs CPU kernels on
    memory_gib: float  # physical memory
    gpus: tuple[Gpu, ...] = ()  # CUDA GPUs, in device order
    mps: bool = False  # Apple's GPU (Metal), taken by Lightning's "auto" where there is no CUDA GPU

    @classmethod
    def from_torch(cls) -> Machine:
        """What torch sees in this process."""
        import torch  # the training process has it loaded already

        gpus = tuple(Gpu(torch.cuda.get_device_name(index),
                         torch.cuda.get_device_properties(index).total_memory / 2**30,
                         torch.cuda.is_bf16_supported()) for index in range(torch.cuda.device_count())) \
            if torch.cuda.is_available() else ()
        return cls(torch.get_num_threads(), _memory_gib(), gpus, torch.backends.mps.is_available())

    @classmethod
    @functools.cache
    def probe(cls) -> Machine:
        """Read without torch, once per process: the cores this process may use (torch's default
        thread count), and the GPUs nvidia-smi lists (none where it is absent or fails)."""
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        mps = platform.system() == "Darwin" and platform.machine() == "arm64"
        return cls(threads, _memory_gib(), _nvidia_smi_gpus(), mps)


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _nvidia_smi_gpus(timeout_s: float = 5.0) -> tuple[Gpu, ...]:
    command = shutil.which("nvidia-smi")
    if command is None:
        return ()
    try:
        listing = subprocess.run([command, "--query-gpu=name,memory.total,compute_cap",
                                  "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in listing.splitlines():
        name, memory_mib, capability = (part.strip() for part in line.rsplit(",", 2))
        try:
            gpus.append(Gpu(name, float(memory_mib) / 1024, float(capability) >= BF16_COMPUTE_CAPABILITY))
        except ValueError:  # "[N/A]" and the like: a GPU it cannot describe is no GPU to plan for
            continue
    return tuple(gpus)
