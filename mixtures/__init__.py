"""Token accounting, tokenization into Megatron indexed datasets, mixture planning and blend files."""
