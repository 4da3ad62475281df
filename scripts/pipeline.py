"""The staged pipeline: pretrain a tiny model on arithmetic, then SFT, DPO and GRPO it, each
stage starting from the previous checkpoint, with promotion gates (configs/gates.yaml) between.

    uv run scripts/pipeline.py [--out DIR] [<stage>.<field>=value ...]

Runs offline on CPU in a few minutes. OUT/summary.json holds every stage's held-out figures
(stages.sft.accuracy, stages.dpo.pref_accuracy_before/after, stages.grpo.accuracy_before/after)
and the gate verdicts. Exit status: 0 when every stage passed, 1 when a gate stopped the
pipeline, 2 on bad configuration.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="output dir")
    parser.add_argument("--pretrain", type=Path, default=None, help="pretraining config")
    parser.add_argument("--sft", type=Path, default=None, help="SFT config")
    parser.add_argument("--dpo", type=Path, default=None, help="DPO config")
    parser.add_argument("--grpo", type=Path, default=None, help="GRPO config")
    parser.add_argument("--gates", type=Path, default=None, help="gates config")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="e.g. grpo.training.max_steps=20")
    args = parser.parse_args(argv)

    from zmaj_lm.config.posttrain import PipelineStage
    from zmaj_lm.posttrain.cli import user_errors
    from zmaj_lm.posttrain.pipeline import load_pipeline_configs, run_pipeline
    from zmaj_lm.utils.logging import setup_logging

    defaults = PipelineStage()
    paths = PipelineStage(
        **{
            stage: str(getattr(args, stage) or ROOT / getattr(defaults, stage))
            for stage in ("pretrain", "sft", "dpo", "grpo", "gates")
        }
    )
    setup_logging(args.log_level)
    try:
        configs = load_pipeline_configs(paths, args.out, args.overrides)
        summary = run_pipeline(configs, args.out, log_level=args.log_level)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"stages": summary["stages"], "stopped_at": summary["stopped_at"]}, indent=2))
    if summary["stopped_at"] is not None:
        failed = summary["gates"][summary["stopped_at"]]
        bad = [c for c in failed["checks"] if not c["passed"]]
        print(f"pipeline stopped: gate {summary['stopped_at']} failed: {bad}", file=sys.stderr)
        return 1
    print(f"all stages passed in {summary['wall_time_s']}s; summary in {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
