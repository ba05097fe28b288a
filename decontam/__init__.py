"""Decontamination stage: benchmark loaders, the n-gram index, the filter step and the contamination report."""
