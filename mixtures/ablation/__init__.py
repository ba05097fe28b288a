"""Mixture ablation, as Ruyi2 chooses its data ratios (report §4.2): candidate mixtures around the recipe's
weights and the standard baselines, proxy runs of the project's own familial trainer on the run's own
token prefixes, per-category smoothing-spline response curves and joint regressions cross-validated, a
proposal under the planner's constraints, validated against every baseline over seeds, and a report."""
