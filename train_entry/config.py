"""The ``train`` section of a recipe: the familial model (a preset plus overrides and its exits), the loop,
the exit-loss schedules lambda_k(t), parallelism and DaE."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.config import Strict


class ExitWeightSchedule(Strict):
    """lambda_k(t) for one exit: `start` at step 0 (after warm-up), moving to `end` at the last step."""

    start: float = Field(1.0, ge=0)
    end: float = Field(1.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class ModelSettings(Strict):
    preset: Literal["tiny", "proxy-0.5b", "ruyi2-14b"] = "tiny"
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    ffn_hidden_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    num_query_groups: int | None = Field(None, ge=1)
    kv_channels: int | None = Field(None, ge=1)
    exits: list[int] | None = Field(None, description="0-based exit layer indices; the last one is the full model")


class DaeSettings(Strict):
    """DaE stage 1: deepen one branch with new identity-initialised blocks, everything else frozen."""

    enabled: bool = False
    exit: int | None = Field(None, description="0-based exit layer to deepen; default the smallest branch")
    blocks: int = Field(3, ge=1)


class InitFrom(Strict):
    """The weights continued pretraining starts from."""

    path: str = Field(description="a Hugging Face Qwen3 folder (config.json + safetensors, sharded or not), or a "
                                  "checkpoint folder of ours (train/checkpoint of a run with the same model)")
    format: Literal["auto", "hf", "mcore"] = Field("auto", description="auto: told apart by the folder's files")


class StepGuardSettings(Strict):
    """What a step whose update would damage the weights does (``train_entry/step_guard.py``)."""

    nonfinite: Literal["skip", "stop"] = Field("stop", description="NaN or infinity in the loss or the gradients: skip the "
                                               "update, or stop the run after a checkpoint of the weights before it")
    loss_spike: float | None = Field(None, gt=1, description="a final-exit loss above this many times the median of the last "
                                     "spike_window applied steps is a spike (default: no spike rule)")
    spike_window: int = Field(50, ge=5)
    on_spike: Literal["skip", "stop"] = "skip"
    max_skips: int = Field(10, ge=1, description="this many steps skipped in a row stop the run")


class TrainConfig(Strict):
    enabled: bool = True
    model: ModelSettings = ModelSettings()
    init_from: InitFrom | None = Field(
        None, description="start from these weights (continued pretraining); the model's shape must be the checkpoint's"
    )
    untie_embeddings: bool = Field(
        False, description="a base with tied embeddings (tie_word_embeddings: Qwen3-0.6B/1.7B/4B) trains and exports tied; "
                           "true gives the full model a head of its own, starting as a copy of the embedding"
    )
    make_vocab_size_divisible_by: int = Field(
        128, ge=1, description="the embedding and heads get rows up to a multiple of this and of tensor_parallel (zeros "
                               "from a Hugging Face base; stripped on export); Qwen3's vocabulary needs none"
    )
    steps: int = Field(8, ge=1, description="optimizer steps over all curriculum stages")
    micro_batch_size: int = Field(2, ge=1)
    seq_length: int = Field(64, ge=8)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    global_batch_size: int | None = Field(
        None, ge=1, description="samples per optimizer step over all data-parallel replicas, accumulated in micro-batches "
                                "(a multiple of micro_batch_size x data-parallel size); default: one micro-batch per replica"
    )
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up from 0 (megatron-core's scheduler)")
    lr_schedule: Literal["cosine", "linear", "constant", "wsd"] = Field(
        "cosine", description="after warm-up: decay over the run, or wsd: stable, then decay over lr_anneal_stage"
    )
    lr_anneal_stage: str | None = Field(
        None, description="wsd: the curriculum stage over whose steps the learning rate decays to min_lr (default: the last)"
    )
    lr_wsd_decay_style: Literal["linear", "cosine", "exponential", "minus_sqrt"] = "linear"
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay of weight matrices (norms, biases, embeddings: none)")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    clip_grad: float = Field(1.0, ge=0, description="largest gradient norm over the whole model (0: no clipping)")
    document_masks: bool = Field(
        False, description="packed sequences: documents do not attend to each other and positions restart after each "
                           "end-of-document token (Megatron-LM's --reset-attention-mask --reset-position-ids)"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: bf16 parameters and activations, fp32 master weights and gradient reduction"
    )
    distributed_optimizer: bool = Field(False, description="shard optimizer state over data-parallel ranks (megatron-core)")
    recompute: Literal["none", "selective", "full"] = Field(
        "none", description="activation recompute: selective (attention scores) or full (every decoder layer)"
    )
    attention: Literal["fused", "unfused"] = Field(
        "fused", description="core attention: fused (PyTorch's scaled_dot_product_attention; document masks as "
                             "FlexAttention on a GPU; no s x s scores kept) or unfused (megatron-core's DotProductAttention)"
    )
    data_workers: int = Field(2, ge=0, description="DataLoader worker processes building the next steps' micro-batches "
                                                   "while the current step trains (0: built in the training process)")
    data_prefetch: int = Field(2, ge=1, description="steps each data worker builds ahead")
    data_from: Literal["run_dir", "published"] = Field(
        "run_dir", description="run_dir: the token files in the run directory; published: the copies mixture.publish put on "
                               "object storage, read by megatron-core (.idx cached in train/dataset_cache, .bin by ranged GETs)"
    )
    tensorboard: bool = Field(True, description="TensorBoard event files in train/tensorboard beside metrics.jsonl")
    seed: int = 1234
    exit_weights: list[ExitWeightSchedule] | None = Field(
        None, description="one schedule per exit (same order as model exits) over all steps; default: all 1.0"
    )
    stage_exit_weights: dict[str, list[ExitWeightSchedule]] = Field(
        default_factory=dict,
        description="curriculum stage -> one schedule per exit over that stage's own steps (a restart); other stages "
                    "continue exit_weights",
    )
    eval_samples: int = Field(8, ge=0, description="held-out samples per curriculum stage, evaluated per exit")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    tensor_parallel: int = Field(1, ge=1, description="under torchrun: tensor-parallel size")
    pipeline_parallel: int = Field(1, ge=1, description="under torchrun: pipeline-parallel size (data parallel is the rest)")
    virtual_pipeline_parallel: int = Field(
        1, ge=1, description="model chunks per pipeline rank: interleaved 1F1B (Megatron-LM's virtual pipeline stages), "
                             "a smaller pipeline bubble; needs pipeline_parallel > 1 and micro-batches per step a multiple of it"
    )
    pipeline_balance: Literal["exits", "even"] | list[int] = Field(
        "exits", description="pipeline stages (pipeline_parallel x virtual_pipeline_parallel of them): balanced for the "
                            "exit branches' cost, an even split, or layers per stage"
    )
    dae: DaeSettings = DaeSettings()
    save_interval: int = Field(0, ge=0, description="sharded checkpoint every N steps (0: only at the end); --resume continues from the latest")
    async_save: bool = Field(False, description="interval checkpoints staged to host memory and written by a background "
                                               "thread while training goes on; published once every rank has written")
    keep_checkpoints: int | None = Field(None, ge=1, description="keep the newest N checkpoints, removing older ones after "
                                                                 "each save (default: all)")
    guard: StepGuardSettings = Field(StepGuardSettings(), description="non-finite gradients and loss spikes: skip or stop")

    def resolve_paths(self, absolute) -> None:
        if self.init_from:
            self.init_from.path = absolute(self.init_from.path)
