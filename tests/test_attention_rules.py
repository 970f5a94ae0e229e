"""The fused attention kernel's launch rules, checked without a GPU (gpu/fused_attention.py):
its key chunks and the GPUs it runs on. Its values are checked on the GPU
(tests/test_gpu_kernels.py)."""
import types

import pytest

from cupyprune.gpu import fused_attention


@pytest.mark.parametrize("T", range(1, fused_attention.MAX_TOKENS + 1))
def test_every_key_chunk_holds_a_real_key(T):
    """The kernel's online softmax needs a key below T in every chunk (a chunk of padding only
    would have no finite max); chunks are whole mma steps of 16 keys that tile the padded
    length; past 80 tokens a lane holds at most 64 keys' scores."""
    tp = -(-T // 16) * 16
    kc = fused_attention.chunk_keys(tp)
    assert kc % 16 == 0 and tp % kc == 0
    assert tp - kc < T                                  # the last chunk starts below T
    assert kc == tp if tp <= 80 else kc <= 64
    assert fused_attention.block_warps(tp) * 16 == tp   # a block per (sample, head)


def test_fused_attention_needs_compute_capability_8():
    """mma.m16n8k16 in 16-bit types, ldmatrix and cp.async: Ampere (8.0) and later only; the
    answer is kept per device."""
    fused_attention._CAPABLE.clear()
    try:
        cards = {0: "75", 1: "80", 2: "90", 3: "70"}
        device = lambda i: types.SimpleNamespace(id=i, compute_capability=cards[i])  # noqa: E731
        assert [fused_attention._sm80(device(i)) for i in range(4)] == [False, True, True, False]
        cards[0] = "90"                                 # not asked again for a known device
        assert fused_attention._sm80(device(0)) is False
    finally:
        fused_attention._CAPABLE.clear()
