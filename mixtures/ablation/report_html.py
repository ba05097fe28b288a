"""The ablation's HTML report (``RUN_DIR/ablate/report.html``): verdict, proposal vs baselines with
intervals, weights and the plan they imply, fit quality with predicted-vs-measured plots, the spline curve
of every category per exit, and the proxies' loss curves."""

from __future__ import annotations

import math

from mixtures.ablation.outputs import fmt, interval
from pipeline.core.html_page import Page, figure, paragraph, table


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _verdict(summary: dict) -> str:
    versus = summary["versus"]
    wins = sorted(b for b, v in versus.items() if v["verdict"] == "better")
    losses = sorted(b for b, v in versus.items() if v["verdict"] == "worse")
    ties = sorted(b for b, v in versus.items() if v["verdict"] == "no significant difference")
    parts = []
    if wins:
        parts.append(f"The proposal has a lower {summary['target_exit']} {summary['target']} than {', '.join(wins)} (95% interval of "
                     f"the paired difference below zero, {len(summary['seeds'])} seeds).")
    if ties:
        parts.append(f"It does not beat {', '.join(ties)}: the interval of the difference includes zero.")
    if losses:
        parts.append(f"It is worse than {', '.join(losses)}.")
    rho = summary["fit_quality"][summary["target_exit"]]
    rho = rho[rho["chosen"]]["spearman"]
    if rho is None or rho < 0.5:
        parts.append(f"The fits explain little of the differences between runs (cross-validated Spearman of the chosen "
                     f"model {fmt(rho, 2)}): read the proposal as a guess, and train longer or more proxies.")
    if summary["unscored_sources"]:
        parts.append(f"Sources without a held-out prefix are not in the target: {', '.join(summary['unscored_sources'])}.")
    return " ".join(parts)


def comparison_plot(summary: dict):
    plt = _plt()
    names = list(summary["mixtures"])
    stats = [summary["mixtures"][n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    colours = ["#cf222e" if n == "proposal" else "#57606a" for n in names]
    ax.barh(names, [s["mean"] for s in stats], xerr=[s["ci95"] or 0 for s in stats], color=colours, capsize=3)
    lo = min(s["mean"] - (s["ci95"] or 0) for s in stats)
    hi = max(s["mean"] + (s["ci95"] or 0) for s in stats)
    ax.set_xlim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    ax.invert_yaxis()
    ax.set_xlabel(f"{summary['target']}, {summary['target_exit']} (mean, 95% CI)")
    return fig


def scatter_plot(fit: dict, exit_name: str):
    plt = _plt()
    models = list(fit["joint"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.2), squeeze=False)
    y = fit["measured"]
    lo, hi = min(y), max(y)
    for ax, m in zip(axes[0], models):
        cv = fit["joint"][m]["cv"]
        ax.scatter(y, cv["predictions"], s=14, color="#0969da")
        ax.plot([lo, hi], [lo, hi], color="#8c959f", lw=1)
        ax.set_title(f"{m}{' (chosen)' if m == fit['chosen'] else ''}\nSpearman {fmt(cv['spearman'], 2)}, R² {fmt(cv['r2'], 2)}",
                     fontsize=9)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted (out of fold)")
    fig.suptitle(exit_name, fontsize=10)
    fig.tight_layout()
    return fig


def spline_plot(fit: dict, exit_name: str, names: list[str]):
    plt = _plt()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    y = fit["measured"]
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        s = fit["splines"][name]
        ax.scatter(s["points"], y, s=10, color="#8c959f")
        ax.plot(s["x"], s["y"], color="#cf222e", lw=2)
        ax.set_title(f"{name} (CV Spearman {fmt(s['cv']['spearman'], 2)})", fontsize=9)
        ax.set_xlabel("weight")
        ax.set_ylabel("target")
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"{exit_name}: response curve of each category (smoothing spline)", fontsize=10)
    fig.tight_layout()
    return fig


def curves_plot(results: dict, run_ids: list[str], exit_name: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for rid in run_ids:
        curve = results[rid]["curve"]
        steps = [c["step"] for c in curve]
        losses = [c["loss"][exit_name] for c in curve]
        if rid.startswith("proposal"):
            ax.plot(steps, losses, color="#cf222e", lw=1.6, label="proposal" if rid.endswith("s" + rid.split("-s")[-1]) else None)
        elif rid.startswith("cand-"):
            ax.plot(steps, losses, color="#8c959f", lw=0.6, alpha=0.6)
        else:
            ax.plot(steps, losses, color="#0969da", lw=0.9, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss, {exit_name}")
    ax.set_title("proxy runs: candidates (grey), baselines (blue), proposal (red)", fontsize=9)
    return fig


def write_report(ab, results_table, fits: dict, summary: dict, results: dict, exits: list[str], path: str) -> str:
    comp = summary["compute"]
    page = Page(f"Mixture ablation: stage {summary['stage']!r}",
                f"{len(ab.names)} {ab.kind} · {comp['runs']} proxy runs of {comp['proxy_parameters']:,} parameters, "
                f"{ab.proxy_tokens:,} tokens each · target: {summary['target_exit']} {summary['target']}"
                + ("" if ab.cfg.target.benchmark else
                   f" over {', '.join(f'{k} ({w:.2f})' for k, w in summary['target_weights'].items())}"))
    mixtures = summary["mixtures"]
    rows = []
    for name, stat in mixtures.items():
        v = summary["versus"].get(name)
        rows.append([name, interval(stat), "" if v is None else interval(v), "" if v is None else v["verdict"]])
    page.section("Verdict", paragraph(_verdict(summary), "verdict"),
                 table(["mixture", "target (mean ± 95% CI)", "proposal − this (paired)", "proposal is"], rows,
                       highlight={0}),
                 paragraph(f"Predicted for the proposal by the {fits[summary['target_exit']]['chosen']} fit: "
                           f"{summary['predicted']:.4f}; measured {mixtures['proposal']['mean']:.4f}."),
                 figure(comparison_plot(summary), "Proposal (red) and baselines over the validation seeds."))
    baselines = [m for m in mixtures if m != "proposal"]
    weights = results_table.filter(results_table["kind"] == "baseline").unique("mixture", keep="first", maintain_order=True)
    base_w = {r["mixture"]: r for r in weights.iter_rows(named=True)}
    rows = [[c, f"{summary['prior'][c]:.4f}", f"{summary['proposal'][c]:.4f}",
             *[f"{base_w[b]['w_' + c]:.4f}" for b in baselines if b in base_w], f"{summary['caps'][c]:.4f}"] for c in ab.names]
    plan_rows = [[r["unit"], f"{r['weight']:.4f}", f"{r['tokens_planned']:,}", f"{r['unique_tokens']:,}", f"{r['epochs']:.2f}"]
                 for r in summary["plan"]["prefixes"]]
    page.section("Weights and the plan they imply",
                 table(["category", "prior (recipe)", "proposal", *[b for b in baselines if b in base_w], "cap (max_epochs)"], rows),
                 paragraph(f"The proposal planned at stage {summary['stage']!r}'s {ab.stage.tokens:,} tokens "
                           f"(max_epochs {ab.recipe.mixture.max_epochs}); `ruyi2 mix RECIPE --patch "
                           f"{ab.root}/proposal.patch.yaml` applies it."),
                 table(["token prefix", "weight", "tokens planned", "unique tokens", "epochs"], plan_rows))
    quality = [[e, m + (" (chosen)" if m == f["chosen"] else ""), fmt(v["cv"]["spearman"]), fmt(v["cv"]["r2"])]
               for e, f in fits.items() for m, v in f["joint"].items()]
    target_fit = fits[summary["target_exit"]]
    page.section("Fit quality (k-fold cross-validation)",
                 table(["exit", "joint model", "Spearman", "R²"], quality, left=2),
                 figure(scatter_plot(target_fit, summary["target_exit"]), "Out-of-fold predictions against measured target loss."))
    page.section("Response curves per category",
                 *[figure(spline_plot(fits[e], e, ab.names), f"{e}: each point is one fitting run") for e in exits])
    fit_runs = results_table.filter(results_table["in_fit"])["run_id"].to_list()
    val_runs = [r for r in results_table["run_id"].to_list() if r not in fit_runs]
    page.section("Loss curves of the proxy runs",
                 figure(curves_plot(results, fit_runs + val_runs, summary["target_exit"]), "Training loss per step."))
    rejected = summary["rejected"]
    page.section("Compute and rejected mixtures",
                 table(["", "value"], [["proxy runs", comp["runs"]], ["proxy tokens", f"{comp['proxy_tokens']:,}"],
                                       ["proxy FLOPs", f"{comp['proxy_flops']:.3e}"],
                                       ["target run FLOPs (planned)", f"{comp['target_flops']:.3e}"],
                                       ["fraction of the target run", f"{comp['fraction_of_target']:.2%}"]]),
                 table(["mixture", "reason"], [[r["mixture"], r["reason"]] for r in rejected]) if rejected
                 else paragraph("No candidate was rejected by the planner."))
    return page.write(path)
