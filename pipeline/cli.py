"""``ruyi2``: run the Ruyi2 data pipeline and familial training stage by stage, or all at once."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback

from decontam.benchmarks import BenchmarkError
from decontam.check import decontam_check
from decontam.config import DecontamConfig
from dedup.clusters_report import print_cluster_report
from filters.classifier import ClassifierSettings, train_classifier
from filters.classifier_inputs import ClassifierInputError, read_documents
from pipeline.core.errors import StageError, storage_named
from pipeline.core.layout import RunLayout
from pipeline.core.printable import printable
from pipeline.core.run_lock import RunDirLocked, run_lock
from pipeline.demo import prepare_demo, run_demo
from pipeline.recipe import RecipeError, load_recipe
from pipeline.registry import STAGE_NAMES, STAGES
from pipeline.report import build_report, print_contamination, print_report
from pipeline.runner import run_stages
from train_entry.eval_tasks import TASKS as EVAL_TASKS
from train_entry.export import export_run


def _add_patch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch", metavar="FILE", help="a recipe patch merged in first, e.g. RUN_DIR/ablate/proposal.patch.yaml "
                                                   "(mappings key by key, mixture stages by name)")


def _add_common(p: argparse.ArgumentParser, runs: bool = True) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--run-dir", help="override the recipe's run_dir")
    _add_patch(p)
    if runs:
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true", help="keep finished tasks of an interrupted stage instead of "
                                                                 "starting it afresh (refused when the recipe changed what it computes)")
        again.add_argument("--restart", action="store_true", help="let a stage delete kept work it would otherwise refuse "
                                                                  "to (the train stage's checkpoints, the ablation's proxy runs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ruyi2",
        description="Ruyi2 pipeline: filter -> dedup -> decontam -> tokenize -> mix -> train, from one recipe.",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, print its stack (also: RUYI2_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run every stage of a recipe in order", description="Run every stage of a recipe in order.")
    _add_common(p)
    p.add_argument("--from", dest="from_stage", choices=STAGE_NAMES, help="first stage to run (earlier outputs must exist)")
    p.add_argument("--to", dest="to_stage", choices=STAGE_NAMES, help="last stage to run")
    for st in STAGES:
        stage = st.name
        p = sub.add_parser(stage, help=st.help, description=f"{st.help}; reads the previous stage's output from run_dir.")
        _add_common(p)
        if stage == "filter":
            p.add_argument("--retune", action="store_true",
                           help="re-apply the recipe's thresholds to the signals stored by the last filter run (no signal is recomputed)")
        if stage == "dedup":
            p.add_argument("--show-clusters", action="store_true",
                           help="print cluster sizes and the largest duplicate clusters (runs the stage first if it has not run)")
    p = sub.add_parser("add", help="add new files to a finished run: only they are filtered, deduplicated against the run, "
                                   "decontaminated and tokenized; the blends are planned again",
                       description="Add files to a run that finished tokenize, as RUN_DIR/increments/NNN/: the new documents "
                                   "are filtered, deduplicated against every document the run kept (only new ones are removed), "
                                   "decontaminated with the same index and tokenized into new token files; then the mix stage "
                                   "plans the blends again over every layer.")
    _add_common(p)
    p.add_argument("files", nargs="+", metavar="SOURCE=PATH", help="a recipe source and a file, folder or glob of its new data")
    p = sub.add_parser("ablate", help="choose a curriculum stage's mixture, or compare pipeline variants, with proxy runs",
                       description="Mixture ablation (recipe section `ablation`): candidate mixtures and baselines trained as "
                                   "proxy runs on the run's token prefixes, spline and joint fits cross-validated, a proposal "
                                   "under the planner's constraints validated against the baselines over seeds; writes "
                                   "RUN_DIR/ablate/ (results, fits, proposal.patch.yaml, report.html). With `ablation.kind: "
                                   "pipeline`: raw, recipe, leave-one-family-out and the recipe's variants each run the data "
                                   "stages and train the same proxy on equal tokens, scored on the recipe's held-out text; "
                                   "writes summary.json, results.csv, best.patch.yaml. Needs the tokenize stage.")
    _add_common(p)
    p = sub.add_parser("validate", help="check a recipe (keys, types, input paths) and exit", description="Validate a recipe without running anything.")
    p.add_argument("recipe")
    _add_patch(p)
    p = sub.add_parser("decontam-check", help="check any dataset (e.g. SFT data) for benchmark contamination; nothing is removed",
                       description="Build the benchmark n-gram index and report which benchmark items occur in PATH "
                                   "(a .jsonl/.jsonl.gz/.parquet file or a folder of them).")
    p.add_argument("path")
    p.add_argument("--recipe", help="take the decontam settings from this recipe (default: built-in defaults)")
    _add_patch(p)
    p.add_argument("--benchmark-dir", help="folder with <benchmark>/ in its public release format")
    p.add_argument("--text-key", default="text")
    p.add_argument("--id-key", default="id")
    p.add_argument("--out", default="contamination.json", help="report file (default: ./contamination.json)")
    p.add_argument("--fail-on-match", action="store_true", help="exit with status 1 when any item is found")
    p = sub.add_parser("classifier", help="train a fastText quality classifier (positive vs negative documents)")
    csub = p.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    p = csub.add_parser("train", help="train, report held-out precision/recall/AUC, save model.bin (or .ftz) + manifest.json",
                        description="Train a fastText supervised classifier from positive and negative documents "
                                    "(JSONL, Parquet, or one document per file) and save it with its training manifest.")
    p.add_argument("--positive", nargs="+", required=True, help="files, folders or globs of good documents")
    p.add_argument("--negative", nargs="+", required=True, help="files, folders or globs of bad documents")
    p.add_argument("--out", required=True, help="output folder (model.bin or model.ftz, manifest.json)")
    p.add_argument("--text-key", default="text")
    p.add_argument("--email", action="store_true", help="inputs are raw RFC 822 messages: use their bodies")
    p.add_argument("--epoch", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--threshold", type=float, default=0.5, help="score at which held-out precision/recall are measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantize", action="store_true",
                   help="save a quantized model.ftz (~4 MiB instead of ~500 in every filter worker; the manifest "
                        "gives the held-out metrics before and after)")
    p.add_argument("--quantize-cutoff", type=int, default=ClassifierSettings.quantize_cutoff,
                   help="input rows (words, n-gram buckets) a quantized model keeps")
    p = sub.add_parser("report", help="print the run report (funnel, contamination, mixture, exit losses)")
    _add_common(p, runs=False)
    p.add_argument("--html", action="store_true", help="also write RUN_DIR/report.html: one self-contained page with the "
                                                         "funnel, removal reasons and examples, clusters, contamination, plan and curves")
    p = sub.add_parser("export", help="write a run's trained model in Hugging Face format",
                       description="The latest checkpoint of RUN_DIR/train as a Hugging Face folder: the Ruyi2 layout for a "
                                   "familial model, the stock Qwen3 layout for a model without branches.")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output folder (config.json, safetensors shards, tokenizer files)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                   help="weights' dtype (default bfloat16)")
    p.add_argument("--exit", type=int, default=None, help="the exit (0-based layer) generation uses by default (default: the last)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
    p.add_argument("--published-layout", action="store_true",
                   help="only what the published Ruyi2 modeling code loads (no modeling code of ours; DaE blocks refused)")
    p.add_argument("--compressed", action="store_true", help="export the output of `ruyi2 compress` (low-rank DaE blocks, and heads)")
    p.add_argument("--overwrite", action="store_true", help="export into a non-empty --out: the files an earlier export wrote "
                                                            "there are replaced, other files kept")
    p = sub.add_parser("compress", help="DaE stage 2: SVD-LLM v2 compression of a run's DaE blocks",
                       description="Whitened low-rank factors for every linear layer of the DaE blocks, ranks from the "
                                   "truncation losses (Ruyi2 eq. 6); held-out loss per exit before and after; writes "
                                   "RUN_DIR/compress/.")
    p.add_argument("run_dir")
    p.add_argument("--ratio", type=float, default=0.4, help="share of the DaE blocks' parameters to remove (default 0.4)")
    p.add_argument("--calibration", type=int, default=32, help="held-out sequences for the activation statistics")
    p.add_argument("--heldout", type=int, default=32, help="other held-out sequences for the losses before and after")
    p.add_argument("--head-ratio", type=float, default=0.0,
                   help="also compress the deepened branch's LM head by this share of its parameters (default 0: kept whole)")
    p = sub.add_parser("eval", help="benchmark accuracy of every exit (ARC-Challenge, HellaSwag, MMLU, GSM8K)",
                       description="Score a run's trained model (or its compressed one), or any Hugging Face folder (an "
                                   "export, a plain Qwen3), exit by exit, the way lm-evaluation-harness scores the "
                                   "benchmarks; writes results.json, items.parquet and timing.json.")
    p.add_argument("model", help="RUN_DIR (results go to RUN_DIR/eval/train) or a Hugging Face folder (needs --out)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--compressed", action="store_true", help="the output of `ruyi2 compress` (results to RUN_DIR/eval/compress)")
    p.add_argument("--tasks", default=",".join(EVAL_TASKS), help=f"comma-separated (default: {','.join(EVAL_TASKS)})")
    p.add_argument("--limit", type=int, default=None, help="items per task, a fixed spread-out subset (default: all)")
    p.add_argument("--mmlu-shots", type=int, default=5, help="MMLU examples from each subject's dev split (0-5, default 5)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="GSM8K generation length (default 256)")
    p.add_argument("--batch-tokens", type=int, default=2048, help="tokens per forward pass (default 2048)")
    p.add_argument("--exits", default=None, help="comma-separated exits (0-based layers; default: all)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a Hugging Face folder's own Python code run (its config.json auto_map); not needed for a plain "
                        "Qwen3 folder or an export of ours")
    p = sub.add_parser("demo", help="build the embedded demo corpus and run every stage on it",
                       description="Assemble a demo corpus from text shipped inside installed packages and run the whole flow.")
    p.add_argument("--run-dir", default="runs/demo", help="where the demo corpus and run go (default: runs/demo)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--small", action="store_true", help="a smaller corpus (for smoke tests)")
    return parser


# errors that mean the command was asked for something it cannot do as given (exit status 2); every other
# StageError is a run that could not go on (exit status 1)
USAGE_ERRORS = (RecipeError, BenchmarkError, ClassifierInputError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("RUYI2_DEBUG", "") not in ("", "0")
    try:
        return COMMANDS.get(args.command, _stage_command)(args)
    except USAGE_ERRORS as e:
        return _fail(e, 2, debug)
    except StageError as e:
        return _fail(e, 1, debug)


def _fail(e: Exception, status: int, debug: bool) -> int:
    """The one-line message; with --debug (or RUYI2_DEBUG=1) the stack too, a worker process's where it failed there."""
    print(f"error: {e}", file=sys.stderr)
    if debug:
        stack = getattr(e, "stack", None) or "".join(traceback.format_exception(e))
        print(stack, file=sys.stderr)
    elif getattr(e, "stack", None):
        print("(the error happened in a worker process; --debug or RUYI2_DEBUG=1 prints its stack)", file=sys.stderr)
    return status


def _recipe(args):
    return load_recipe(args.recipe, run_dir=args.run_dir, patch=args.patch)


def _demo(args) -> int:
    with storage_named("demo corpus", os.path.abspath(args.run_dir)):  # written under --run-dir first
        path = prepare_demo(os.path.abspath(args.run_dir), args.executor, args.small)
    run_demo(path)
    return 0


def _export(args) -> int:
    read = export_run(os.path.abspath(args.run_dir), os.path.abspath(args.out), args.dtype, args.exit, args.max_shard_size,
                      args.published_layout, args.compressed, args.overwrite)
    print(f"{read} -> {os.path.abspath(args.out)} (Hugging Face format)")
    return 0


def _compress(args) -> int:
    from train_entry.compress import compress_run

    run_dir = os.path.abspath(args.run_dir)
    with run_lock(run_dir):
        done = compress_run(load_recipe(os.path.join(run_dir, "recipe.yaml"), check_inputs=False), run_dir,
                            args.ratio, args.calibration, args.heldout, args.head_ratio)
    before, after = done["added_parameters_before"], done["added_parameters_after"]
    print(f"DaE blocks {done['dae_blocks']}: {before:,} -> {after:,} parameters ({1 - after / before:.1%} fewer)")
    if done["head_ratio"]:
        hb, ha = done["head_parameters_before"], done["head_parameters_after"]
        print(f"branch LM head(s): {hb:,} -> {ha:,} parameters ({1 - ha / hb:.1%} fewer)")
    for exit_name, loss in done["loss_before"].items():
        print(f"  {exit_name}: held-out loss {loss:.4f} -> {done['loss_after'][exit_name]:.4f}")
    print(f"written to {done['checkpoint']}")
    return 0


def _validate(args) -> int:
    recipe = load_recipe(args.recipe, patch=args.patch)
    blocked = {}
    for st in STAGES:
        if st.section and getattr(recipe, st.section) is None:
            blocked[st.name] = f"needs {st.section!r}"
        elif problems := st.preflight(recipe):
            blocked[st.name] = "; ".join(problems)
    runnable = [st.name for st in STAGES if st.name not in blocked]
    print(f"{args.recipe}: OK ({len(recipe.sources)} sources, run_dir {recipe.run_dir}); stages it can run: "
          f"{', '.join(runnable)}" + (f"; not: {', '.join(f'{n} ({why})' for n, why in blocked.items())}" if blocked else ""))
    return 0


def _report(args) -> int:
    recipe = _recipe(args)
    layout = RunLayout(recipe.run_dir)
    if not os.path.isdir(layout.root):
        raise StageError(f"{layout.root}: no run there yet (run_dir of {args.recipe})")
    try:
        with run_lock(layout.root):
            report = build_report(layout)
            print_report(report)
            if args.html:
                from pipeline.report_html import write_run_report

                print(f"HTML report: {write_run_report(layout, report)}")
    except RunDirLocked as e:  # a run is working there: show where it stands, write nothing
        report = build_report(layout, write=False)
        print_report(report)
        print(f"(not written: report.json{' and report.html' if args.html else ''}: {e})", file=sys.stderr)
    return 0


def _stage_command(args) -> int:
    """``ruyi2 run`` and ``ruyi2 <stage>``."""
    recipe = _recipe(args)
    if args.command == "run":
        first = STAGE_NAMES.index(args.from_stage) if args.from_stage else 0
        last = STAGE_NAMES.index(args.to_stage) if args.to_stage else len(STAGE_NAMES) - 1
        run_stages(recipe, list(STAGE_NAMES[first : last + 1]), resume=args.resume, restart=args.restart)
        return 0
    if getattr(args, "show_clusters", False):
        return _show_clusters(recipe, args.resume, args.restart)
    run_stages(recipe, [args.command], resume=args.resume, retune=getattr(args, "retune", False), restart=args.restart)
    return 0


def _eval(args) -> int:
    from train_entry.evaluate import EvalOptions, evaluate_model

    try:
        options = EvalOptions(tasks=tuple(t for t in args.tasks.split(",") if t), limit=args.limit, mmlu_shots=args.mmlu_shots,
                              max_new_tokens=args.max_new_tokens, batch_tokens=args.batch_tokens,
                              exits=tuple(int(e) for e in args.exits.split(",")) if args.exits else None)
    except ValueError as e:
        raise StageError(str(e)) from None
    model = os.path.abspath(args.model)
    # a run's results go into its run directory: held like every command that writes there
    with run_lock(model) if os.path.isfile(os.path.join(model, "train", "stats.json")) else contextlib.nullcontext():
        out, result = evaluate_model(model, args.out and os.path.abspath(args.out), options, args.compressed,
                                     args.trust_remote_code)
    print(printable(result["model"]))
    for task, t in result["tasks"].items():
        metric = t["primary_metric"]
        scores = "  ".join(f"{name} {m[metric]:.4f} ± {m[metric + '_stderr']:.4f}" for name, m in t["exits"].items())
        print(f"  {task:<14} {metric:<12} n={t['n']:<6} {scores}")
    print(f"results in {out}")
    return 0


def _add(args) -> int:
    from pipeline.increment import add_files, parse_added

    recipe = _recipe(args)
    added = parse_added(args.files, recipe)
    done = add_files(recipe, added, args.resume)
    tok = done["results"]["tokenize"]["sources"]
    print(f"added {sum(map(len, added.values()))} file(s) as {done['increment']}: "
          + ", ".join(f"{src} {tok[src]['unique_documents'] + tok[src]['heldout_documents']:,} documents kept" for src in added))
    if "mix" in done["results"]:
        print(f"blends planned again over the run and its {len(done['results']['mix']['increments'])} increment(s): {recipe.run_dir}/mix")
    return 0


def _ablate(args) -> int:
    from pipeline.ablate import ablate

    recipe = _recipe(args)
    summary = ablate(recipe, RunLayout(recipe.run_dir), args.resume, args.restart)
    if summary.get("kind") == "pipeline":
        from pipeline.ablate_pipeline import print_summary

        print_summary(summary, os.path.join(recipe.run_dir, "ablate"))
        return 0
    print(f"ablation of stage {summary['stage']!r} over {', '.join(summary['categories'])}: target {summary['target_exit']}")
    for name, stat in summary["mixtures"].items():
        v = summary["versus"].get(name)
        ci = f" ± {stat['ci95']:.4f}" if stat["ci95"] is not None else ""
        print(f"  {name:<20} {stat['mean']:.4f}{ci}" + (f"   proposal − {name}: {v['mean']:+.4f} ({v['verdict']})" if v else ""))
    print("  proposal: " + ", ".join(f"{c} {w:.3f}" for c, w in summary["proposal"].items()))
    comp = summary["compute"]
    print(f"{comp['runs']} proxy runs, {comp['proxy_flops']:.3e} FLOPs = {comp['fraction_of_target']:.2%} of the planned run; "
          f"report: {os.path.join(summary['folder'], 'report.html')}; patch: {os.path.join(summary['folder'], 'proposal.patch.yaml')}")
    return 0


def _show_clusters(recipe, resume: bool, restart: bool) -> int:
    layout = RunLayout(recipe.run_dir)
    path = os.path.join(layout.stage("dedup"), "clusters.json")
    if not os.path.exists(path) or resume:
        run_stages(recipe, ["dedup"], resume=resume, restart=restart)
    with open(path, encoding="utf-8") as f:
        print_cluster_report(json.load(f))
    return 0


def _decontam_check(args) -> int:
    cfg = load_recipe(args.recipe, check_inputs=False, patch=args.patch).decontam if args.recipe else DecontamConfig()
    if args.benchmark_dir:
        cfg.benchmark_dir = os.path.abspath(args.benchmark_dir)
    try:
        report = decontam_check(args.path, cfg, args.out, args.text_key, args.id_key)
    except FileNotFoundError as e:
        raise BenchmarkError(str(e)) from None
    print_contamination(report["benchmarks"], report["index"],
                        title=f"contamination in {printable(args.path)} ({report['documents_checked']:,} documents)")
    print(f"{report['documents_affected']:,} of {report['documents_checked']:,} documents contain benchmark n-grams; report: {args.out}")
    if report["records_unreadable"]:
        print(f"{report['records_unreadable']:,} of {report['records_read']:,} records could not be checked "
              f"({', '.join(f'{r} {n}' for r, n in sorted(report['unreadable_reasons'].items()))}); they are named in the report",
              file=sys.stderr)
    return 1 if args.fail_on_match and report["documents_affected"] else 0


def _classifier_train(args) -> int:
    sides = {side: read_documents(getattr(args, side), args.text_key, args.email) for side in ("positive", "negative")}
    settings = ClassifierSettings(epoch=args.epoch, lr=args.lr, word_ngrams=args.word_ngrams, dim=args.dim,
                                  test_fraction=args.test_fraction, seed=args.seed, threshold=args.threshold,
                                  quantize=args.quantize, quantize_cutoff=args.quantize_cutoff)
    inputs = {side: {"paths": getattr(args, side), "files": d.files, "documents": len(d.documents),
                     "skipped_files": d.skipped} for side, d in sides.items()}
    for side, d in sides.items():
        if d.skipped:
            print(f"{side}: not documents, not read: {', '.join(f'{n:,} {ext}' for ext, n in sorted(d.skipped.items()))} file(s)")
    manifest = train_classifier(sides["positive"].documents, sides["negative"].documents, args.out, settings, inputs)
    m = manifest["metrics"]
    print(f"trained on {m['train']:,} documents; held out {m['held_out']:,} ({m['held_out_positive']:,} positive); "
          f"empty, not used: {m['empty_positive']:,} positive, {m['empty_negative']:,} negative")
    print(f"held-out precision {m['precision']:.4f}  recall {m['recall']:.4f}  AUC {m['auc']:.4f}  (threshold {m['threshold']})")
    if "metrics_unquantized" in manifest:
        u = manifest["metrics_unquantized"]
        print(f"before quantizing: precision {u['precision']:.4f}  recall {u['recall']:.4f}  AUC {u['auc']:.4f}")
    print(f"model: {os.path.join(args.out, manifest['model'])}  manifest: {os.path.join(args.out, 'manifest.json')}")
    return 0


COMMANDS = {"demo": _demo, "export": _export, "eval": _eval, "compress": _compress, "decontam-check": _decontam_check,
            "classifier": _classifier_train, "validate": _validate, "ablate": _ablate, "add": _add, "report": _report}


if __name__ == "__main__":
    sys.exit(main())
