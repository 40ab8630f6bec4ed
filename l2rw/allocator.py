"""Keep freed CPU memory in the process for reuse, the way PyTorch's CUDA caching allocator does.

glibc returns every freed block above its mmap threshold (a few MB, adjusted at run time) to
the kernel, so each training step maps its activations afresh and pays a page fault per 4 KiB
page the first time it touches them. On a ResNet-32 step at batch 100 the activations are
6.5 MB tensors; serving them from the heap and not trimming it made a plain sgd step 11%
faster on the 2-core development machine and took most of the step-to-step jitter away
(`python scripts/bench_step.py --keep-freed-memory false` measures it). The price is that the process
keeps its peak heap size instead of shrinking after a step.
"""
import ctypes
import ctypes.util

# mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# glibc's largest accepted mmap threshold on 64-bit: blocks up to this size come from the heap
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Tune glibc's malloc to reuse freed blocks; False (and nothing changed) where the C
    library is not glibc, e.g. macOS."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
