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

BF16_COMPUTE_CAPABILITY = (8, 0)  # Ampere and newer run bf16 natively


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One CUDA GPU."""

    name: str
    memory_gib: float
    bf16: bool  # supports bf16 natively (compute capability 8.0 or newer)


@dataclasses.dataclass(frozen=True)
class Machine:
    """The hardware a run would get."""

    cpu_threads: int  # threads torch runs CPU kernels on
    memory_gib: float  # physical memory
    gpus: tuple[Gpu, ...] = ()  # CUDA GPUs, in device order
    mps: bool = False  # Apple's GPU (Metal), taken by Lightning's "auto" where there is no CUDA GPU

    @classmethod
    def from_torch(cls, details: bool = True) -> Machine:
        """What torch sees in this process. details=False leaves each GPU's name, memory and bf16
        unread (empty, 0, False): reading them initialises CUDA, which a process that only asks how
        many GPUs there are (a CPU predictor, a fork-based strategy before it starts) must not do."""
        import torch  # the training process has it loaded already

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        def gpu(index: int) -> Gpu:
            return Gpu(torch.cuda.get_device_name(index), torch.cuda.get_device_properties(index).total_memory / 2**30,
                       torch.cuda.get_device_capability(index) >= BF16_COMPUTE_CAPABILITY)

        gpus = tuple(gpu(index) if details else Gpu("", 0.0, False) for index in range(count))
        return cls(torch.get_num_threads(), _memory_gib(), gpus, torch.backends.mps.is_available())

    @classmethod
    @functools.cache
    def probe(cls) -> Machine:
        """Read without torch, once per process: the threads torch would take (OMP_NUM_THREADS, else
        the cores this process may use), and the GPUs nvidia-smi lists that CUDA_VISIBLE_DEVICES
        leaves visible (none where nvidia-smi is absent or fails)."""
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        omp = os.environ.get("OMP_NUM_THREADS", "")
        mps = platform.system() == "Darwin" and platform.machine() == "arm64"
        return cls(int(omp) if omp.isdigit() and int(omp) > 0 else threads, _memory_gib(), _visible(_nvidia_smi_gpus()),
                   mps)


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
        try:
            name, memory_mib, capability = (part.strip() for part in line.rsplit(",", 2))
            bf16 = tuple(map(int, capability.split("."))) >= BF16_COMPUTE_CAPABILITY
            gpus.append(Gpu(name, float(memory_mib) / 1024, bf16))
        except ValueError:  # "[N/A]", a warning line: a GPU it cannot describe is no GPU to plan for
            continue
    return tuple(gpus)


def _visible(gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """The GPUs CUDA_VISIBLE_DEVICES leaves to torch: all when it is unset, those it lists by index,
    none when it is empty or names none of them (-1, or UUIDs this does not resolve)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    indices = [int(part) for part in visible.split(",") if part.strip().isdigit()]
    return tuple(gpus[index] for index in indices if index < len(gpus))
