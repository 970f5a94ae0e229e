"""Grouped and depthwise convolution (groups > 1: MobileNet, EfficientNet, ResNeXt, ConvNeXt) on
channels-last activations, as one batched product per kernel tap.

Legend: N batch, G groups, Cg = C / G input and Kg = K / G output channels per group, kh kw
kernel. For each tap (i, j) the input window x[:, i*dh + oh*sh, j*dw + ow*sw, :] (a strided view
of the padded input, no copy) is multiplied per group by weight[:, :, i, j]; the taps' products
are summed, as one batched GEMM (G, M, Cg) @ (G, Cg, Kg) per tap. A depthwise conv (Cg = 1) is
an elementwise multiply-add per tap.
"""
import numpy as np

from .im2col import out_size


class GroupedConv:
    """weight (K, Cg, kh, kw) masked, on the device; bias (K,) or None."""

    def __init__(self, xp, weight, bias, groups, geometry):
        self.xp, self.groups = xp, groups
        K, Cg, kh, kw = weight.shape
        self.K, self.Cg, self.Kg = K, Cg, K // groups
        self.kh, self.kw, self.stride, self.padding, self.dilation = geometry
        w = weight.reshape(groups, self.Kg, Cg, kh, kw)                  # (G, Kg, Cg, kh, kw)
        self.taps = [xp.ascontiguousarray(w[..., i, j].transpose(0, 2, 1))   # (G, Cg, Kg)
                     for i in range(kh) for j in range(kw)]
        self.bias = bias

    def __call__(self, x):
        xp = self.xp
        N, H, W, C = x.shape
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        OH = out_size(H, self.kh, sh, ph, dh)
        OW = out_size(W, self.kw, sw, pw, dw)
        xpad = xp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
        G, Cg, Kg = self.groups, self.Cg, self.Kg
        y = xp.zeros((N, OH, OW, G, Kg), dtype=np.float32 if x.dtype == np.float16 else x.dtype)
        t = 0
        for i in range(self.kh):
            for j in range(self.kw):
                win = xpad[:, i * dh: i * dh + sh * (OH - 1) + 1: sh,
                           j * dw: j * dw + sw * (OW - 1) + 1: sw, :]        # (N, OH, OW, C)
                win = win.reshape(N, OH, OW, G, Cg)
                w = self.taps[t]                                             # (G, Cg, Kg)
                if Cg == 1 and Kg == 1:                                      # depthwise
                    y += win * w[:, 0, :]
                else:                                 # (G, M, Cg) @ (G, Cg, Kg) -> (G, M, Kg)
                    cols = xp.ascontiguousarray(win.reshape(-1, G, Cg).transpose(1, 0, 2))
                    y += xp.matmul(cols, w).transpose(1, 0, 2).reshape(y.shape)
                t += 1
        y = y.reshape(N, OH, OW, self.K)
        if self.bias is not None:
            y += self.bias
        return y.astype(x.dtype, copy=False)                                # (N, OH, OW, K)
