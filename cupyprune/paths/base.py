"""A GEMM path multiplies activations by one layer's (masked) im2col weight matrix F.

Legend: M rows of activations (N*OH*OW pixels or N*T tokens), R rows of F (reduction),
T kept rows, K outputs. A path is built once at load from F and its bool mask; it may read only
some columns of the activations (`input_rows`), which lets the conv build only those im2col
columns and the linear gather only those features (paper Algorithms 1 and 2).
"""


class GemmPath:
    name = ""
    input_rows = None   # device int32 array of the columns of X the path reads; None = all R
    capturable = True   # may run inside a CUDA graph capture

    def __call__(self, x):
        """x: (M, R) or (M, T) when input_rows is set -> (M, K)."""
        raise NotImplementedError

    @property
    def nbytes(self):
        """Bytes of weight data the path holds on the device."""
        raise NotImplementedError

    def fused(self, x, bias, residual, relu):
        """relu?(x @ F + bias + residual) -> (M, K) in one kernel, or None where this path cannot
        (then the caller runs the path and the epilogue apart)."""
        return None


class MatrixPath(GemmPath):
    """A path that holds one weight matrix `w` and multiplies it with `matmul` (gpu/gemm.py)."""
    matmul = None
    w = None

    def __call__(self, x):
        return self.matmul(x, self.w)                # (M, R or T) @ (R or T, K) -> (M, K)

    def fused(self, x, bias, residual, relu):
        return self.matmul.fused(x, self.w, bias, residual, relu)

    @property
    def nbytes(self):
        return self.w.nbytes
