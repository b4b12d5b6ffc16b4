"""Optional FP8 linear layers: e4m3 weights and activations with rowwise scales.

Each decoder-layer ``nn.Linear`` becomes a `Float8RowwiseLinear`: the weight is quantized once
per output row (scale = row absmax / 448), each activation row is quantized on the fly, and
``torch._scaled_mm`` multiplies them with fp32 accumulation, applying both scales and the bias in
its epilogue. On Hopper GPUs the FP8 GEMMs run about 1.6× the bf16 ones at Qwen2.5-32B shapes
(``shared/bench/fp8_probe.py``); the weights take half the memory. The reward head, embeddings and
norms stay in the model's dtype. Off by default: rewards move by the FP8 rounding, so measure
ordering agreement with the bf16 engine before relying on it (``bench/engine_bench.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
# cuBLASLt's FP8 GEMM wants every dimension a multiple of 16.
_ALIGN = 16


def _rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) → e4m3 values and (R, 1) fp32 scales with x ≈ values · scales."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


class Float8RowwiseLinear(torch.nn.Module):
    """A frozen ``nn.Linear`` computed as an FP8 GEMM with rowwise scales (inference only).

    Args:
        linear: the layer to replace; its weight (N, K) is quantized per output row.
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        n, k = linear.weight.shape
        if n % _ALIGN or k % _ALIGN:
            raise ValueError(f"FP8 GEMMs need dimensions divisible by {_ALIGN}, got {n}x{k}")
        self.in_features, self.out_features = k, n
        w8, w_scale = _rowwise(linear.weight.detach())
        self.register_buffer("weight_fp8", w8)  # (N, K)
        self.register_buffer("weight_scale", w_scale.t().contiguous())  # (1, N)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        m = x2.shape[0]
        pad = -m % _ALIGN
        if pad:
            x2 = F.pad(x2, (0, 0, 0, pad))
        x8, x_scale = _rowwise(x2)
        out = torch._scaled_mm(
            x8,
            self.weight_fp8.t(),  # (K, N), column-major as the GEMM wants
            scale_a=x_scale,
            scale_b=self.weight_scale,
            bias=None if self.bias is None else self.bias.to(self.out_dtype),
            out_dtype=self.out_dtype,
        )
        return out[:m].reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3 rowwise"


def convert_to_fp8(model: torch.nn.Module) -> int:
    """Replaces every ``nn.Linear`` inside the decoder layers, in place; returns how many.

    The bf16 weights are dropped as each layer is converted, so peak memory does not grow.
    """
    layers = getattr(getattr(model, model.base_model_prefix), "layers", None)
    if not layers:
        raise TypeError(f"{type(model).__name__} has no decoder 'layers' to convert")
    count = 0
    for layer in layers:
        for name, child in list(layer.named_modules()):
            if isinstance(child, torch.nn.Linear):
                parent = layer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else layer
                setattr(parent, name.rsplit(".", 1)[-1], Float8RowwiseLinear(child))
                count += 1
    return count
