"""Command line: build a demo checkpoint, export and validate a checkpoint (into its export
folder; `python -m serving.pipeline build` also installs it and writes the configs), or build
TensorRT engines from an export (on a machine with TensorRT and a GPU).

  python -m export demo-model --size tiny --output build/models/demo-tiny
  python -m export onnx --model mrm8488/t5-base-finetuned-squadv2
  python -m export onnx --model mrm8488/t5-base-finetuned-squadv2 --precision int8
  python -m export engines --model mrm8488/t5-base-finetuned-squadv2 --precision bf16
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contract.limits import TENSORRT_MAX_BATCH
from contract.names import SEED_MODEL as DEFAULT_MODEL
from export import DEFAULT_WORKDIR, workdir_for
from export.precision import PRECISIONS as TARGET_PRECISIONS
from export.tensorrt import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-model", help="write a seeded random-weight T5 checkpoint")
    demo.add_argument("--size", default="base",
                      help="layout: base, small, tiny, tiny-deep-decoder, tiny-narrow-heads, tiny-v1.1, "
                           "tiny-relative-buckets (export.demo_model.SIZES)")
    demo.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--weights", choices=("safetensors", "bin"), default="safetensors",
                      help="model.safetensors or pytorch_model.bin")
    demo.add_argument("--tokenizer-format", choices=("tokenizer.json", "spiece.model"), default="tokenizer.json",
                      help="save the fast tokenizer, or only the SentencePiece model (as 2020-era Hub repositories)")
    demo.add_argument("--realistic", action="store_true",
                      help="logits in the hundreds and answers that stop early at different steps, as trained "
                           "checkpoints have (needs the SQuAD dev set in ../shared/data)")

    onnx = commands.add_parser("onnx", help="export and validate against PyTorch (into --workdir)")
    onnx.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local checkpoint folder (never replaced by a demo model)")
    onnx.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where exports are kept and reused")
    onnx.add_argument("--atol", type=float, default=None,
                      help="validation: |logit difference| accepted at any scale (default: export.validate.ATOL)")
    onnx.add_argument("--rtol", type=float, default=None,
                      help="validation: |logit difference| accepted per unit of the step's max |logit| "
                           "(default: export.validate.RTOL)")
    onnx.add_argument("--precision", choices=TARGET_PRECISIONS["cpu"], default=TARGET_PRECISIONS["cpu"][0],
                      help="int8: also the dynamically quantized graphs for TARGET=cpu, validated against fp32 on "
                           "SQuAD 2.0 dev prompts (export.quantize)")

    engines = commands.add_parser("engines", help="TensorRT engines for the gpu-tensorrt target (needs a GPU)")
    engines.add_argument("--model", default=DEFAULT_MODEL, help="the checkpoint exported by `onnx` before")
    engines.add_argument("--repository", type=Path, default=Path("model_repository"))
    engines.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    engines.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                         help="engine precision (no fp16: T5's activations overflow it; see export/tensorrt.py)")
    engines.add_argument("--max-batch", type=int, default=TENSORRT_MAX_BATCH, help="largest batch the profiles cover")
    engines.add_argument("--timing-cache", type=Path, default=Path("build/tensorrt/timing.cache"))

    args = parser.parse_args(argv)
    if args.command == "engines":
        from export.tensorrt import Limits, TensorRTUnavailable, build_engines
        try:
            seconds = build_engines(workdir_for(args.model, args.workdir), args.repository, args.precision,
                                    Limits(max_batch=args.max_batch), args.timing_cache)
        except (TensorRTUnavailable, FileNotFoundError) as error:
            print(f"cannot build engines: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"precision": args.precision, "build_seconds": seconds}, indent=2))
        return 0
    if args.command == "demo-model":
        from export.demo_model import build_demo_model
        try:
            print(build_demo_model(args.size, args.output, args.seed, weights=args.weights,
                                   tokenizer_format=args.tokenizer_format, realistic=args.realistic))
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    from export.onnx_export import export_model, failure
    from export.validate import ATOL, RTOL, ValidationError
    tolerance = (ATOL if args.atol is None else args.atol, RTOL if args.rtol is None else args.rtol)
    workdir = workdir_for(args.model, args.workdir)
    try:
        manifest = export_model(args.model, workdir, *tolerance)
        if args.precision == "int8":
            from export.quantize import quantize_export
            manifest = {**manifest, "int8": quantize_export(args.model, workdir)}
    except (ValidationError, OSError) as error:
        print(failure(args.model, error), file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
