"""ScoringEngine: packed, padding-free reward scoring — the hot path every command shares.

The path of one call, top to bottom:

1. `ScoringEngine.score_ids` / `score_groups` take token id sequences (a group: K sequences that
   share a prompt) and call `_score_units`.
2. `_score_units` plans: a group too large for one batch becomes single sequences, and
   `token_budget_batches` cuts the units, longest first, into batches of at most ``token_budget``
   tokens.
3. `_run_batch` runs one batch; on out-of-memory it splits the batch in two and retries each half.
4. `_forward_units` chooses the path: one sequence longer than a batch goes through
   `Forward.long` (`chunked_reward`, layer-major chunked prefill); anything else is packed into
   one stream (`pack`, or `pack_groups` for shared prompts) and goes through `Forward.packed`.
5. `Forward` is the seam to the model. `ModelForward` runs it on this process's device:
   `packed_rewards` calls the HF backbone with ``position_ids`` restarting per sequence and
   ``cu_seq_lens_q`` in its kwargs; every decoder layer's attention dispatches (through
   transformers' ``AttentionInterface``) to `rewardkit.engine.attention.varlen_attention_forward`,
   which runs ``torch.nn.attention.varlen.varlen_attn`` (flash varlen) on CUDA and one SDPA per
   segment on the CPU. The head reads only each sequence's pooled token (`apply_head`).
   Tensor parallel wraps the forward in a `rewardkit.engine.tensor_parallel.Lockstep` (the
   ``wrap_forward`` parameter), which first sends each forward to the other ranks.
6. Rewards stay on the device until one host sync at the end of the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch._dynamo
import torch.nn.functional as F

from rewardkit.engine.attention import VARLEN, KeyPlan, LayerKV
from rewardkit.engine.batching import (
    PackedBatch,
    group_cost,
    pack,
    pack_groups,
    pool_index,
    token_budget_batches,
)
from rewardkit.engine.fp8 import convert_to_fp8
from rewardkit.models.loading import SEQUENCE_CLASSIFICATION, attention_implementation, lm_logit_token
from rewardkit.nested import flatten, split

log = logging.getLogger(__name__)

_T = TypeVar("_T")
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


def head_linear(
    model: torch.nn.Module, head: str = SEQUENCE_CLASSIFICATION
) -> tuple[torch.nn.Module, int | None]:
    """The linear layer holding the reward row, and the row if the head fixes it (else ``None``:
    the row is the output index): ``model.score`` for ``sequence-classification``, the output
    embedding (``lm_head``) and TOKEN_ID for ``lm-logit:TOKEN_ID``."""
    token = lm_logit_token(head)
    linear = getattr(model, "score", None) if token is None else model.get_output_embeddings()
    return linear, token


def apply_head(
    model: torch.nn.Module,
    pooled: torch.Tensor,
    *,
    output_index: int = 0,
    head_dtype: torch.dtype | None = None,
    head: str = SEQUENCE_CLASSIFICATION,
) -> torch.Tensor:
    """The reward head on pooled final hidden states: (B, D) → (B,).

    For ``lm-logit:TOKEN_ID`` this is the next-token logit of TOKEN_ID — one row of the output
    embedding, never the full (B, V) vocabulary projection.
    """
    linear, token = head_linear(model, head)
    row = output_index if token is None else token
    w = linear.weight[row]  # (D,)
    bias = None if linear.bias is None else linear.bias[row : row + 1]
    dtype = head_dtype or w.dtype
    pooled, w = pooled.to(dtype), w.to(dtype)  # no-ops when already in the head's dtype
    bias = None if bias is None else bias.to(dtype)
    return F.linear(pooled, w[None], bias)[:, 0]


def packed_rewards(
    model: torch.nn.Module,
    batch: PackedBatch,
    *,
    output_index: int = 0,
    head_dtype: torch.dtype | None = None,
    head: str = SEQUENCE_CLASSIFICATION,
) -> torch.Tensor:
    """Rewards of the sequences packed in ``batch`` (already on the model's device): (B,).

    The body runs once over the whole stream with varlen causal attention; the head is applied
    only at each sequence's pooled token. Differentiable (the trainer uses it too).
    """
    backbone = getattr(model, model.base_model_prefix)
    keys = {} if batch.keys is None else {"rewardkit_keys": batch.keys}
    with attention_implementation(model, VARLEN):
        hidden = backbone(
            input_ids=batch.input_ids[None],  # (1, T)
            position_ids=batch.position_ids[None],
            use_cache=False,
            cu_seq_lens_q=batch.cu_seqlens,
            max_length_q=batch.max_seqlen,
            **keys,
        ).last_hidden_state[0]  # (T, D)
    pooled = hidden.index_select(0, batch.read_index)  # (B, D)
    return apply_head(model, pooled, output_index=output_index, head_dtype=head_dtype, head=head)


def chunked_reward(
    model: torch.nn.Module,
    ids: Sequence[int],
    chunk: int,
    *,
    output_index: int = 0,
    head_dtype: torch.dtype | None = None,
    pad_token_id: int | None = None,
    head: str = SEQUENCE_CLASSIFICATION,
) -> torch.Tensor:
    """Reward of one sequence longer than a batch, computed layer by layer in chunks: (1,).

    Layer-major chunked prefill: for each decoder layer, the sequence's hidden states go through
    in chunks of ``chunk`` tokens, each chunk attending to the keys/values of every earlier chunk
    of that layer (kept in a `LayerKV`), and overwrite themselves with the layer's output. The
    same forward as one pass, with memory bounded by the hidden states (T·D), one layer's
    keys/values (T·2·kv·hd) and one chunk's activations — a 128k-token conversation fits beside
    a 32B model on one 80 GB GPU. Layers run uncompiled here (chunks vary in length).
    """
    backbone = getattr(model, model.base_model_prefix)
    cfg = model.config
    device = next(model.parameters()).device
    n = len(ids)
    x = backbone.embed_tokens(torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None])[
        0
    ]  # (T, D)
    pos = torch.arange(n, device=device)[None]
    cos, sin = backbone.rotary_emb(x[None], pos)  # (1, T, hd) each
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    kv //= getattr(model, "tp_size", None) or 1  # tensor parallel: this rank's key/value heads
    cache = LayerKV(n, kv, hd, dtype=x.dtype, device=device)
    log.info(
        "chunked prefill: %d tokens in chunks of %d; key/value cache %d bytes per token (one layer), %.2f GiB",
        n,
        chunk,
        2 * kv * hd * x.element_size(),
        2 * n * kv * hd * x.element_size() / 2**30,
    )

    def i32(*xs: int) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.int32, device=device)

    # The chunks' boundaries are the same in every layer: built once. Chunk [s, e) attends to
    # keys [0, e) of its layer, bottom-right aligned (its last query sees every key).
    chunks = [
        (s, e, i32(0, e - s), KeyPlan(cu_seqlens_k=i32(0, e), max_seqlen_k=e, cache=cache))
        for s in range(0, n, chunk)
        for e in [min(n, s + chunk)]
    ]
    with attention_implementation(model, VARLEN):
        for layer in backbone.layers:
            for s, e, cu_q, plan in chunks:
                x[s:e] = layer.forward(
                    x[None, s:e],
                    position_embeddings=(cos[:, s:e], sin[:, s:e]),
                    position_ids=pos[:, s:e],
                    cu_seq_lens_q=cu_q,
                    max_length_q=e - s,
                    rewardkit_keys=plan,
                )[0]
    j = pool_index(ids, pad_token_id)
    pooled = backbone.norm(x[j : j + 1])  # (1, D): the final norm is per token
    return apply_head(model, pooled, output_index=output_index, head_dtype=head_dtype, head=head)


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


class Forward(Protocol):
    """What an engine runs on the model: the seam where tensor parallel's `Lockstep` plugs in.

    ``packed`` takes a packed stream (on the CPU) and returns its (B,) rewards on the device;
    ``long`` takes one sequence longer than a batch and returns its (1,) reward.
    """

    def packed(self, batch: PackedBatch) -> torch.Tensor: ...

    def long(self, ids: Sequence[int]) -> torch.Tensor: ...


def cpu_threads(model: torch.nn.Module) -> int:
    """Intra-op threads for a forward on the CPU: one per 512 hidden units, at most torch's.

    A small model's operations are too short to split: on 2 cores the 1.2M-parameter demo model
    scored 512 conversations 3-4× slower with torch's default 2 threads than with one (OpenMP
    threads wait on each other, more so when another thread is tokenizing), and the gap grows
    with load on the machine.
    """
    return max(1, min(torch.get_num_threads(), model.config.hidden_size // 512))


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Runs the block with ``n`` intra-op threads (``None``: as they are)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True, kw_only=True)
class ModelForward:
    """`Forward` on this process's device: `packed_rewards` and `chunked_reward` without grad.

    Args:
        model: the reward model (HF backbone + head).
        device: where the model's weights are.
        output_index / head_dtype / head: see `apply_head`.
        pad_token_id: the pad id HF's classifier pools by (``None`` for an ``lm-logit`` head).
        chunk: tokens per chunk of a long sequence (the engine's token budget).
        threads: intra-op threads while it runs (the CPU: `cpu_threads`; ``None``: unchanged).
    """

    model: torch.nn.Module
    device: torch.device
    output_index: int
    head_dtype: torch.dtype
    head: str
    pad_token_id: int | None
    chunk: int
    threads: int | None = None

    @torch.inference_mode()
    def packed(self, batch: PackedBatch) -> torch.Tensor:
        with _threads(self.threads):
            return packed_rewards(
                self.model,
                batch.to(self.device),
                output_index=self.output_index,
                head_dtype=self.head_dtype,
                head=self.head,
            )

    @torch.inference_mode()
    def long(self, ids: Sequence[int]) -> torch.Tensor:
        with _threads(self.threads):
            return chunked_reward(
                self.model,
                ids,
                self.chunk,
                output_index=self.output_index,
                head_dtype=self.head_dtype,
                pad_token_id=self.pad_token_id,
                head=self.head,
            )


class ScoringEngine:
    """Scores token sequences with a reward model, packed.

    Sequences are sorted by length, cut into token-budget batches, each batch run as one
    padding-free stream with varlen causal attention; the head is applied only at each
    sequence's pooled token. Gives the model card's ``logits[0][i]`` for every sequence (or,
    with an ``lm-logit:TOKEN_ID`` head, the card's one-token ``generate`` ``scores[0][0][TOKEN_ID]``).
    The module docstring walks through one call.

    Args:
        model: a HF ``*ForSequenceClassification`` (``score`` head) or, with an ``lm-logit`` head,
            ``*ForCausalLM`` (output embedding ``lm_head``); the body is ``base_model_prefix``.
        output_index: which head output is the reward (``sequence-classification`` only).
        token_budget: tokens per packed batch; ``None`` sizes it from free device memory.
        head_dtype: run the head in this dtype (``None``: the model's own, as the card does).
        compile: ``torch.compile`` each decoder layer (see `set_compiled`); ``None`` compiles on
            CUDA devices, where it measured faster, and not on the CPU.
        fp8: replace the decoder layers' linear layers by FP8 GEMMs (see `rewardkit.engine.fp8`;
            in place, irreversible; off by default).
        head: ``sequence-classification`` or ``lm-logit:TOKEN_ID`` (see `apply_head`).
        wrap_forward: wraps the engine's `ModelForward` (e.g. tensor parallel's `Lockstep`, or a
            test double); the engine calls only the `Forward` it returns.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        output_index: int = 0,
        token_budget: int | None = None,
        head_dtype: torch.dtype | None = None,
        compile: bool | None = None,
        head: str = SEQUENCE_CLASSIFICATION,
        fp8: bool = False,
        wrap_forward: Callable[[Forward], Forward] | None = None,
    ) -> None:
        self.model = model
        self.fp8 = fp8
        if fp8:  # before sizing the budget: FP8 weights free half the weight memory
            log.info(
                "converted %d decoder linear layers to FP8 (e4m3, rowwise scales)", convert_to_fp8(model)
            )
        self.head = head
        linear, token = head_linear(model, head)
        if not isinstance(linear, torch.nn.Linear):
            name = "'score' head" if token is None else "output embedding (lm_head)"
            raise TypeError(f"{type(model).__name__} has no linear {name} for the {head} head")
        if token is not None and not token < linear.weight.shape[0]:
            raise ValueError(f"{head}: token id outside the vocabulary ({linear.weight.shape[0]} tokens)")
        self.device = next(model.parameters()).device
        self.output_index = output_index
        # A sequence classifier reads the last non-pad token (as HF's does); a causal LM's next
        # token comes from the conversation's last token, whatever it is.
        self.pad_token_id = model.config.pad_token_id if token is None else None
        self.token_budget = token_budget or auto_token_budget(model, self.device)
        self.head_dtype = head_dtype or linear.weight.dtype
        self.compiled = self.device.type == "cuda" if compile is None else compile
        if self.compiled:
            set_compiled(model, True)
        forward: Forward = ModelForward(
            model=model,
            device=self.device,
            output_index=output_index,
            head_dtype=self.head_dtype,
            head=head,
            pad_token_id=self.pad_token_id,
            chunk=self.token_budget,
            threads=cpu_threads(model) if self.device.type == "cpu" else None,
        )
        self.forward = forward if wrap_forward is None else wrap_forward(forward)

    def warm_up(self) -> float:
        """Compiles the decoder layers now, on a small packed batch, rather than inside the first
        real one; returns the seconds it took (0 when not compiled)."""
        if not self.compiled:
            return 0.0
        t0 = time.perf_counter()
        self.score_ids([[1] * 16, [2] * 24])
        return time.perf_counter() - t0

    def score_ids(self, seqs: Sequence[Sequence[int]], *, progress: ProgressFn | None = None) -> list[float]:
        """Rewards for token sequences, in input order.

        Args:
            seqs: token id sequences, each non-empty.
            progress: called after each batch with (sequences, tokens) of that batch.
        """
        return self._score_units(seqs, [[i] for i in range(len(seqs))], progress)

    def score_groups(
        self, groups: Sequence[Sequence[Sequence[int]]], *, progress: ProgressFn | None = None
    ) -> list[list[float]]:
        """Rewards for groups of sequences that share a prefix (K responses to one prompt).

        Each group's common token prefix is computed once (see `pack_groups`); the rewards equal
        scoring every sequence alone.
        """
        flat, sizes = flatten(groups)
        units = split(range(len(flat)), sizes)
        return split(self._score_units(flat, [u for u in units if u], progress), sizes)

    def _score_units(
        self, seqs: Sequence[Sequence[int]], units: list[list[int]], progress: ProgressFn | None
    ) -> list[float]:
        """Rewards of ``seqs``, scored as ``units`` (lists of indices; a unit of several shares a
        prefix)."""
        if not seqs:
            return []
        if min(len(s) for s in seqs) == 0:
            raise ValueError("cannot score an empty token sequence")
        # 1. A group too large for one batch is scored as separate sequences; a single sequence
        #    too large for one batch takes the chunked path (a batch of its own).
        fitted: list[list[int]] = []
        costs: list[int] = []
        for u in units:
            cost = group_cost([seqs[i] for i in u])
            if len(u) > 1 and cost > self.token_budget:
                fitted.extend([i] for i in u)
                costs.extend(len(seqs[i]) for i in u)
            else:
                fitted.append(u)
                costs.append(cost)
        # 2. Token-budget batches, longest first; each runs with out-of-memory retries.
        done: list[tuple[list[int], torch.Tensor]] = []
        for batch in token_budget_batches(costs, self.token_budget):
            units_b = [fitted[b] for b in batch]
            done.extend(self._run_batch(seqs, units_b))
            if progress is not None:
                progress(sum(len(u) for u in units_b), sum(len(seqs[i]) for u in units_b for i in u))
        # 3. One host sync for the whole call.
        order = torch.tensor([i for idx, _ in done for i in idx])
        values = torch.cat([r for _, r in done]).float().cpu()
        out = torch.empty(len(seqs))
        out[order] = values
        return out.tolist()

    def _run_batch(
        self, seqs: Sequence[Sequence[int]], units: list[list[int]]
    ) -> list[tuple[list[int], torch.Tensor]]:
        """Runs one planned batch; on out-of-memory splits it in two and retries each half.

        Returns (sequence indices, their rewards on the device) per part that ran.
        """
        flat = [i for u in units for i in u]
        try:
            return [(flat, self._forward_units(seqs, units))]
        except torch.OutOfMemoryError:
            if len(flat) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning(
                "out of memory on a batch of %d sequences (%d tokens); splitting it in two",
                len(flat),
                sum(len(seqs[i]) for i in flat),
            )
            if len(units) == 1:  # one group: score its sequences separately
                units = [[i] for i in flat]
            half = len(units) // 2
            return self._run_batch(seqs, units[:half]) + self._run_batch(seqs, units[half:])

    def _forward_units(self, seqs: Sequence[Sequence[int]], units: list[list[int]]) -> torch.Tensor:
        """The path for one batch: chunked prefill for one over-long sequence, else one packed
        stream (with shared prefixes when a unit is a group). Rewards in ``units`` order."""
        if len(units) == 1 and len(units[0]) == 1 and len(seqs[units[0][0]]) > self.token_budget:
            return self._compiled_or_eager(self.forward.long, seqs[units[0][0]])
        if all(len(u) == 1 for u in units):
            batch = pack([seqs[u[0]] for u in units], self.pad_token_id)
        else:
            batch = pack_groups([[seqs[i] for i in u] for u in units], self.pad_token_id)
        return self._compiled_or_eager(self.forward.packed, batch)

    def _compiled_or_eager(self, run: Callable[[_T], torch.Tensor], arg: _T) -> torch.Tensor:
        """``run(arg)``; if compiling the decoder layers fails, undoes compilation and runs eagerly."""
        try:
            return run(arg)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            log.warning("compiling the decoder layers failed (%s); running them eagerly", e)
            set_compiled(self.model, False)
            self.compiled = False
            return run(arg)
