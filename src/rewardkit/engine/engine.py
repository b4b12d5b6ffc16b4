"""ScoringEngine: packed, padding-free reward scoring — the hot path every command shares."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch._dynamo
import torch.nn.functional as F

from rewardkit.engine.attention import VARLEN
from rewardkit.engine.batching import PackedBatch, pack, token_budget_batches
from rewardkit.models.reference import attention_implementation

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (sequences done, tokens done) since the last call
CPU_TOKEN_BUDGET = 8192


def auto_token_budget(model: torch.nn.Module, device: torch.device) -> int:
    """Tokens per packed batch from the free device memory.

    Inference keeps one layer's activations alive at a time; per token that is about
    the residual stream and its norm (2·D), q/k/v (D + 2·kv·hd), attention out (D) and the MLP's
    gate, up and product (3·I) elements. Half the free memory is given to that, the rest
    is headroom for the allocator and kernels' workspaces.
    """
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    cfg = model.config
    d, inter = cfg.hidden_size, cfg.intermediate_size
    kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    elems = 4 * d + 2 * kv * hd + 3 * inter
    per_token = elems * next(model.parameters()).element_size()
    free, _ = torch.cuda.mem_get_info(device)
    budget = int(0.5 * free / per_token)
    return max(1024, min(budget, 65536)) // 256 * 256


def packed_rewards(
    model: torch.nn.Module,
    batch: PackedBatch,
    *,
    output_index: int = 0,
    head_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Rewards of the sequences packed in ``batch`` (already on the model's device): (B,).

    The body runs once over the whole stream with varlen causal attention; the head is applied
    only at each sequence's pooled token. Differentiable (the trainer uses it too).
    """
    backbone = getattr(model, model.base_model_prefix)
    with attention_implementation(model, VARLEN):
        hidden = backbone(
            input_ids=batch.input_ids[None],  # (1, T)
            position_ids=batch.position_ids[None],
            use_cache=False,
            cu_seq_lens_q=batch.cu_seqlens,
            cu_seq_lens_k=batch.cu_seqlens,
            max_length_q=batch.max_seqlen,
            max_length_k=batch.max_seqlen,
        ).last_hidden_state[0]  # (T, D)
    pooled = hidden.index_select(0, batch.read_index)  # (B, D)
    head = model.score
    w = head.weight[output_index]  # (D,)
    bias = None if head.bias is None else head.bias[output_index : output_index + 1]
    dtype = head_dtype or w.dtype
    pooled, w = pooled.to(dtype), w.to(dtype)  # no-ops when already in the head's dtype
    bias = None if bias is None else bias.to(dtype)
    return F.linear(pooled, w[None], bias)[:, 0]  # (B,)


def set_compiled(model: torch.nn.Module, enabled: bool) -> int:
    """Compiles every decoder layer in place (or undoes it); returns how many layers.

    Per-layer compilation fuses the norms, rotary embedding and the MLP's activation around
    cuBLAS GEMMs; one dynamic-shape graph serves every batch length.
    """
    layers = getattr(getattr(model, model.base_model_prefix), "layers", None)
    if not layers:
        raise TypeError(f"{type(model).__name__} has no decoder 'layers' to compile")
    for layer in layers:
        if enabled:
            layer.compile(dynamic=True)
        else:
            layer._compiled_call_impl = None
    return len(layers)


class ScoringEngine:
    """Scores token sequences with a ``*ForSequenceClassification`` model, packed.

    Sequences are sorted by length, cut into token-budget batches, each batch run as one
    padding-free stream with varlen causal attention; the head is applied only at each
    sequence's pooled token. Gives the model card's ``logits[0][i]`` for every sequence.

    Args:
        model: a HF ``*ForSequenceClassification`` (``score`` head, ``base_model_prefix`` body).
        output_index: which head output is the reward.
        token_budget: tokens per packed batch; ``None`` sizes it from free device memory.
        head_dtype: run the head in this dtype (``None``: the model's own, as the card does).
        compile: ``torch.compile`` each decoder layer (see `set_compiled`); ``None`` compiles on
            CUDA devices, where it measured faster, and not on the CPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        output_index: int = 0,
        token_budget: int | None = None,
        head_dtype: torch.dtype | None = None,
        compile: bool | None = None,
    ) -> None:
        self.model = model
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"{type(model).__name__} has no linear 'score' head")
        self.device = next(model.parameters()).device
        self.output_index = output_index
        self.pad_token_id = model.config.pad_token_id
        self.token_budget = token_budget or auto_token_budget(model, self.device)
        self.head_dtype = head_dtype or head.weight.dtype
        self.compiled = self.device.type == "cuda" if compile is None else compile
        if self.compiled:
            set_compiled(model, True)
        self.forward_batch = self._forward  # replaced in tests to simulate running out of memory

    @torch.inference_mode()
    def _forward(self, batch: PackedBatch) -> torch.Tensor:
        """One packed stream → (B,) rewards, left on the device (no host sync)."""
        return packed_rewards(
            self.model, batch.to(self.device), output_index=self.output_index, head_dtype=self.head_dtype
        )

    def _run(self, seqs: Sequence[Sequence[int]], idx: list[int]) -> list[tuple[list[int], torch.Tensor]]:
        """Runs one planned batch; on out-of-memory splits it in two and retries each half."""
        try:
            return [(idx, self.forward_batch(pack([seqs[i] for i in idx], self.pad_token_id)))]
        except torch._dynamo.exc.BackendCompilerFailed as e:
            log.warning("compiling the decoder layers failed (%s); running them eagerly", e)
            set_compiled(self.model, False)
            self.compiled = False
            return self._run(seqs, idx)
        except torch.OutOfMemoryError:
            if len(idx) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(idx) // 2
            log.warning(
                "out of memory on a batch of %d sequences (%d tokens); splitting it in two",
                len(idx),
                sum(len(seqs[i]) for i in idx),
            )
            return self._run(seqs, idx[:half]) + self._run(seqs, idx[half:])

    def score_ids(self, seqs: Sequence[Sequence[int]], *, progress: ProgressFn | None = None) -> list[float]:
        """Rewards for token sequences, in input order.

        Args:
            seqs: token id sequences, each non-empty.
            progress: called after each batch with (sequences, tokens) of that batch.
        """
        if not seqs:
            return []
        lens = [len(s) for s in seqs]
        if min(lens) == 0:
            raise ValueError("cannot score an empty token sequence")
        done: list[tuple[list[int], torch.Tensor]] = []
        for idx in token_budget_batches(lens, self.token_budget):
            done.extend(self._run(seqs, idx))
            if progress is not None:
                progress(len(idx), sum(lens[i] for i in idx))
        # One host sync for the whole call.
        order = torch.tensor([i for idx, _ in done for i in idx])
        values = torch.cat([r for _, r in done]).float().cpu()
        out = torch.empty(len(seqs))
        out[order] = values
        return out.tolist()
