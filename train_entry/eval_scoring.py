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
    token, or ``max_new_tokens``). Every step re-runs the batch's full sequences: the megatron-core model
    here has no KV cache, which a few hundred tokens per item on a proxy model do not need."""
    prompts = [tokenizer.encode(c, add_special_tokens=False).ids for c in contexts]
    out: dict[int, list[str]] = {}
    for e in exits or scorer.exits:
        texts = [""] * len(prompts)
        for batch in _batches([len(p) + max_new_tokens for p in prompts], batch_tokens):
            seqs = {i: list(prompts[i]) for i in batch}
            new: dict[int, list[int]] = {i: [] for i in batch}
            live = list(batch)
            for _ in range(max_new_tokens):
                rows = [seqs[i][-scorer.max_length:] for i in live]
                last = torch.tensor([[len(r) - 1] for r in rows])
                lg = scorer.logits(_padded(rows, eos), (e,), last)[e]
                still = []
                for row, i in enumerate(live):
                    tok = int(lg[row, 0].argmax())
                    if tok == eos:
                        continue
                    seqs[i].append(tok)
                    new[i].append(tok)
                    text = tokenizer.decode(new[i])
                    if not any(s in text for s in stop[i]):
                        still.append(i)
                live = still
                if not live:
                    break
            for i in batch:
                text = tokenizer.decode(new[i])
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
