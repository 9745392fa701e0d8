"""keep_freed_memory: freed large blocks stay mapped, so reusing them costs no page faults."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
from kaldi_compress.compute.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(12 << 20, dtype=np.float32)     # 48 MiB, above glibc's mmap limit
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[-1])
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"),
                    reason="the C library has no mallopt (not glibc)")
def test_freed_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert default > 0                  # every new block is faulted in again
    assert kept * 10 < default          # the kept block is reused as it is
