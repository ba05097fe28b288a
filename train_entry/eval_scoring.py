"""Scoring benchmark items with a familial model, exit by exit, the way lm-evaluation-harness does.

A ``Scorer`` gives the logits of every exit it is asked for on a right-padded batch (causal attention, so
padding after a sequence changes nothing before it). Two scorers: a run's megatron-core model (one forward
gives every exit's logits) and a Hugging Face folder loaded with ``AutoModelForCausalLM`` (an exported Ruyi2
checkpoint, one call per exit through ``early_exit_point``; a plain Qwen3 folder has one exit).

Log-likelihood requests follow lm-evaluation-harness's ``_encode_pair`` (trailing spaces of the context move
to the continuation; the continuation's tokens are the whole text's tokens after the context's) and its
left truncation to the model's context length. Requests are batched longest first under a token budget, so
the logits held at once stay bounded (a batch holds ``batch_tokens`` x vocabulary floats per exit). Written
here because lm-evaluation-harness runs its own model wrappers (HF, vLLM), not a megatron-core model with
exits; its request format and metrics are kept.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch


class Scorer:
    """Logits of a model's exits. ``exits``: 0-based layer indices; ``max_length``: the context length."""

    exits: tuple[int, ...]
    max_length: int

    def logits(self, tokens: torch.Tensor, exits: tuple[int, ...], positions: torch.Tensor) -> dict[int, torch.Tensor]:
        """exit -> logits [b, k, v] at ``positions`` [b, k] of each row of ``tokens`` [b, s]."""
        raise NotImplementedError

    @torch.no_grad()
    def greedy_tokens(self, prompts: list[list[int]], e: int, max_new_tokens: int, live: set[int], pad: int):
        """Each step, exit ``e``'s greedy next token of every row still in ``live`` ({row: token}); the caller
        removes finished rows from ``live`` between steps. Here every step re-runs the live rows' whole
        sequences (right-padded, the last ``max_length`` tokens): the megatron-core model has no KV cache,
        which a few hundred tokens per item on a proxy model do not need."""
        seqs = [list(p) for p in prompts]
        for _ in range(max_new_tokens):
            rows = sorted(live)
            if not rows:
                return
            inputs = [seqs[r][-self.max_length:] for r in rows]
            last = torch.tensor([[len(x) - 1] for x in inputs])
            lg = self.logits(_padded(inputs, pad), (e,), last)[e]
            step = dict(zip(rows, lg[:, 0].argmax(-1).tolist()))
            for r, tok in step.items():
                seqs[r].append(tok)
            yield step


@dataclass
class MegatronScorer(Scorer):
    model: object  # FamilialGPTModel at TP = PP = 1
    exits: tuple[int, ...]
    max_length: int

    def logits(self, tokens, exits, positions):
        from train_entry.devices import model_device

        # the model's device for the inputs, the CPU for the logits (only the asked positions: small)
        device = model_device(self.model)
        tokens, positions = tokens.to(device), positions.to(device)
        # only the wanted positions reach the heads: with a 151k vocabulary the heads dominate a small model
        out = self.model.exit_logits(tokens, torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens),
                                     positions)
        return {e: out[e].cpu() for e in exits}


@dataclass
class HFScorer(Scorer):
    model: object  # transformers PreTrainedModel
    exits: tuple[int, ...]
    max_length: int
    familial: bool  # a Ruyi2-layout model (early_exit_point chooses the exit)

    @torch.no_grad()
    def logits(self, tokens, exits, positions):
        from train_entry.devices import model_device

        keep = tokens.shape[1] - int(positions.min())  # logits_to_keep: the last positions, enough for every row
        kwargs = lambda e: {"early_exit_point": e} if self.familial else {}  # noqa: E731
        tokens = tokens.to(model_device(self.model))
        out = {}
        for e in exits:
            lg = self.model(input_ids=tokens, use_cache=False, logits_to_keep=keep, **kwargs(e)).logits
            index = (positions - (tokens.shape[1] - keep)).to(lg.device)
            out[e] = lg.gather(1, index.unsqueeze(-1).expand(*index.shape, lg.shape[-1])).cpu()
        return out

    @torch.no_grad()
    def greedy_tokens(self, prompts, e, max_new_tokens, live, pad):
        """With transformers' KV cache: the prompts once (left-padded, positions counted from each row's first
        token), then one token per row per step. A prompt keeps its last ``max_length - max_new_tokens``
        tokens, so prompt and continuation fit the context."""
        from transformers import DynamicCache

        from train_entry.devices import model_device

        device = model_device(self.model)
        keep = max(1, self.max_length - max_new_tokens)
        rows = [p[-keep:] for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        # transformers renamed the argument (past_key_values -> cache); our modeling code takes both
        cache_kw = "cache" if "cache" in inspect.signature(type(self.model).forward).parameters else "past_key_values"
        exit_kw = {"early_exit_point": e} if self.familial else {}
        for _ in range(max_new_tokens):
            if not live:
                return
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                             **{cache_kw: cache}, **exit_kw)
            tokens = out.logits[:, -1].argmax(-1)
            chosen = tokens.tolist()  # one device sync per step
            yield {r: chosen[r] for r in sorted(live)}
            ids, positions = tokens[:, None], positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-evaluation-harness encodes a log-likelihood request."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False).ids
    ctx = tokenizer.encode(context, add_special_tokens=False).ids
    return ctx, whole[len(ctx):]


def _batches(lengths: list[int], batch_tokens: int):
    """Request indices, longest first (ties in request order), cut so rows x longest <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[batch[0]] > batch_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _padded(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def loglikelihoods(scorer: Scorer, requests: list[tuple[list[int], list[int]]], pad: int,
                   batch_tokens: int = 2048, exits: tuple[int, ...] | None = None) -> dict[int, list[tuple[float, bool]]]:
    """exit -> (sum of the continuation's log-probabilities, whether it is the greedy continuation) per request.
    ``pad``: the end-of-document token (padding, and the context of a request without one); ``exits``:
    default every exit of the scorer."""
    exits = exits or scorer.exits
    inputs, spans = [], []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("a log-likelihood request's continuation has 0 tokens")
        ctx = ctx or [pad]  # an empty context: conditioned on the end-of-document token, as lm-eval does
        whole = (ctx + cont)[-(scorer.max_length + 1):]
        # a continuation longer than the context length is scored on the tokens that fit (its last ones)
        target = whole[-min(len(cont), len(whole) - 1):]
        inputs.append(whole[:-1])
        spans.append((len(whole) - 1 - len(target), target))  # the target's logits start there
    out = {e: [None] * len(requests) for e in exits}
    for batch in _batches([len(x) for x in inputs], batch_tokens):
        width = max(len(spans[i][1]) for i in batch)
        # each row's continuation positions, the shorter ones padded with their last position
        positions = torch.tensor([[min(spans[i][0] + j, len(inputs[i]) - 1) for j in range(width)] for i in batch])
        logits = scorer.logits(_padded([inputs[i] for i in batch], pad), exits, positions)
        for e, lg in logits.items():
            for row, i in enumerate(batch):
                target = spans[i][1]
                logp = torch.log_softmax(lg[row, :len(target)].float(), dim=-1)
                target_t = torch.tensor(target)
                out[e][i] = (float(logp.gather(1, target_t[:, None]).sum()), bool((logp.argmax(-1) == target_t).all()))
    return out


@torch.no_grad()
def greedy_generate(scorer: Scorer, tokenizer, contexts: list[str], stop: list[tuple[str, ...]], eos: int,
                    max_new_tokens: int, batch_tokens: int = 2048, exits: tuple[int, ...] | None = None) -> dict[int, list[str]]:
    """exit -> the greedy continuation of each context, cut at its first stop sequence (or the end-of-document
    token, or ``max_new_tokens``), through the scorer's ``greedy_tokens`` (a KV cache for Hugging Face models)."""
    prompts = [tokenizer.encode(c, add_special_tokens=False).ids for c in contexts]
    out: dict[int, list[str]] = {}
    for e in exits or scorer.exits:
        texts = [""] * len(prompts)
        for batch in _batches([len(p) + max_new_tokens for p in prompts], batch_tokens):
            new: list[list[int]] = [[] for _ in batch]
            live = set(range(len(batch)))
            steps = scorer.greedy_tokens([prompts[i] for i in batch], e, max_new_tokens, live, eos)
            for step in steps:
                for row, tok in step.items():
                    if tok == eos:
                        live.discard(row)
                        continue
                    new[row].append(tok)
                    if any(s in tokenizer.decode(new[row]) for s in stop[batch[row]]):
                        live.discard(row)
            for row, i in enumerate(batch):
                text = tokenizer.decode(new[row])
                cut = min([text.index(s) for s in stop[i] if s in text], default=len(text))
                texts[i] = text[:cut]
        out[e] = texts
    return out


_ANSWER_IS = re.compile(r"answer is\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def extract_number(generation: str) -> str | None:
    """The final answer of a chain of thought: the number after "answer is" (the shots' form), else the last
    number (lm-evaluation-harness's flexible extract); commas and a trailing period dropped."""
    m = _ANSWER_IS.search(generation)
    found = m.group(1) if m else (_NUMBER.findall(generation) or [None])[-1]
    return found.replace(",", "").rstrip(".") if found else None


def same_number(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    gold = gold.replace(",", "").strip()
    try:
        return float(predicted) == float(gold)
    except ValueError:
        return predicted == gold
