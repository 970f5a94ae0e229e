"""GPU-only pieces: a direct cuBLAS binding, the GEMM dispatch, fused epilogues and CUDA-graph
replay. Nothing here touches CUDA at import time; each piece loads on first use."""
