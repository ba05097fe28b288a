"""Familial (multi-branch, early-exit) continued pretraining on megatron-core: the handoff target of the pipeline."""
