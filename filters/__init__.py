"""Filtering stage: language identification, heuristic quality rules, and the stage pipeline that applies them."""
