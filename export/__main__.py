"""Command line: build a demo checkpoint, or export a checkpoint into the model repository.

  python -m export demo-model --size tiny --output build/models/demo-tiny
  python -m export onnx --model mrm8488/t5-base-finetuned-squadv2 --repository model_repository
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from export.demo_model import SIZES, build_demo_model
from export.onnx_export import export_model, install
from export.validate import ValidationError

DEFAULT_MODEL = "mrm8488/t5-base-finetuned-squadv2"


def workdir_for(model: str, root: Path) -> Path:
    return root / model.strip("/").replace("/", "--")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-model", help="write a seeded random-weight T5 checkpoint")
    demo.add_argument("--size", choices=sorted(SIZES), default="base", help="t5-base architecture or a tiny one")
    demo.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    demo.add_argument("--seed", type=int, default=0)

    onnx = commands.add_parser("onnx", help="export, validate against PyTorch, install into the repository")
    onnx.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local checkpoint folder (never replaced by a demo model)")
    onnx.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    onnx.add_argument("--workdir", type=Path, default=Path("build/onnx"), help="where exports are kept and reused")
    onnx.add_argument("--atol", type=float, default=1e-4, help="largest |logit difference| accepted")

    args = parser.parse_args(argv)
    if args.command == "demo-model":
        print(build_demo_model(args.size, args.output, args.seed))
        return 0
    try:
        manifest = export_model(args.model, workdir_for(args.model, args.workdir), args.atol)
    except ValidationError as error:
        print(f"export failed validation: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot load {args.model!r}: {error}", file=sys.stderr)
        return 1
    install(workdir_for(args.model, args.workdir), args.repository)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
