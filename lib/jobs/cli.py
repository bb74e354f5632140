"""``python -m lib evaluate`` and ``python -m lib ablate``: the commands that score captioners.

Part of the command line (``lib.cli``): library modules are imported inside the handlers, so
``--help`` stays instant.
"""

from __future__ import annotations

from lib.options import add_options, from_args
from lib.settings import AblationConfig, EvalConfig


def _evaluate(a):
    from lib.evaluation.views import summary
    from lib.jobs.evaluate import evaluate_job

    where = {"run_name": a.run, "figures_dir": a.figures, "device": a.device, "blind": a.blind}
    rec, path = evaluate_job(a.checkpoint, a.out, a.profile, a.params_dir, from_args(EvalConfig, a), **where)
    print(f"{summary(rec)}\nwrote {path}")


def _ablate(a):
    from lib.jobs.ablation import ablation_job, select

    cfg = from_args(AblationConfig, a)
    record, path = ablation_job(a.profile, a.params_dir, cfg, a.run, a.figures, rows=select(a.rows or []))
    print(f"{len(record['rows'])} rows\nwrote {path}")


def evaluation_parsers(sub, profile_options) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="caption a split with a trained checkpoint; pycocoevalcap scores with "
        "intervals, reference points, diversity, per-modality, generation throughput",
    )
    ev.add_argument(
        "--checkpoint", required=True, help="a train run's out folder, its ckpt/, or a step-N folder"
    )
    ev.add_argument("--out", required=True, help="folder for eval.json and captions.jsonl")
    ev.add_argument(
        "--blind", help="a blind captioner's run (train --image zeros|shuffled), scored beside the captioner"
    )
    profile_options(ev)
    add_options(ev, EvalConfig)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--figures", help="folder for the gallery figure (default: none)")
    ev.add_argument("--name", dest="run", help="results file name (default: the profile)")
    ev.set_defaults(fn=_evaluate)

    ab = sub.add_parser(
        "ablate",
        help="the recipe by ablation: one setting changed per row (visual tokens, steps, LoRA, label "
        "smoothing, decoding), each trained and scored on the validation split",
    )
    profile_options(ab)
    add_options(ab, AblationConfig)
    ab.add_argument("--rows", nargs="+", metavar="NAME", help="only these rows, by name (default: all)")
    ab.add_argument("--figures", help="folder for the ablation figure (default: none)")
    ab.add_argument("--name", dest="run", help="results file name (default: the profile's run)")
    ab.set_defaults(fn=_ablate)
