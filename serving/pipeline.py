"""The one build pipeline: checkpoint → ONNX export and validation (`export`) → install into a
model repository → `config.pbtxt` files for a target (`serving.repository`). `make export`,
`make bench`, `make serve` (`serving.serve`), the benchmark and the tests all go through
`build`; `make clean` through `clean`.

  python -m serving.pipeline build --model mrm8488/t5-base-finetuned-squadv2 --target cpu
  python -m serving.pipeline build --model mrm8488/t5-base-finetuned-squadv2 --target cpu --precision int8
  python -m serving.pipeline clean
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from contract.files import BUILD, REPOSITORY, generated_files, is_generated
from contract.names import SEED_MODEL
from export import DEFAULT_WORKDIR, workdir_for
from export.precision import ALL_PRECISIONS, PRECISIONS, TORCH_DTYPES, check_precision
from export.validate import ATOL, RTOL, ValidationError
from serving.repository import EXECUTORS, TARGETS, write_repository


def build(model: str, repository: Path, target: str = "cpu", workdir: Path = DEFAULT_WORKDIR,
          tolerance: tuple[float, float] = (ATOL, RTOL), precision: str | None = None, **config_options) -> dict:
    """Export and validate `model` (reusing an earlier export of the same checkpoint), install
    it into `repository`, write the configs of `target`; return the repository's manifest.
    `precision` (default: the target's, `export.precision.PRECISIONS`): on cpu "fp32" installs
    the exported graphs, "int8" their dynamically quantized copies (`export.quantize`, made and
    validated against fp32 once per export); on gpu-torch it sets the torch executor's dtype; for
    gpu-tensorrt it names the engines' precision, which `make engines` builds (here only checked).
    `config_options` go to `serving.repository.write_repository` (decoder_mode, batching, ...).
    A precision the target cannot serve raises ValueError before anything is exported."""
    executor = config_options.get("executor") or TARGETS[target].executor
    graphs = _graph_precision(target, check_precision(target, precision), executor)
    if precision is not None and executor == "torch":
        config_options.setdefault("dtype", TORCH_DTYPES[precision])
    if executor == "torch":  # runs the checkpoint itself: no ONNX export (export.checkpoint)
        from export.checkpoint import install_for_torch
        manifest = install_for_torch(model, repository, config_options.get("dtype") or TARGETS[target].dtype)
    else:
        from export.onnx_export import export_model, install
        from export.quantize import quantize_export
        exported = workdir_for(model, workdir)
        export_model(model, exported, *tolerance)
        if graphs == "int8":
            quantize_export(model, exported)
        manifest = install(exported, repository, graphs)
    write_repository(repository, target, **config_options)
    return manifest


def _graph_precision(target: str, precision: str, executor: str) -> str:
    """The precision of the ONNX graphs to install: int8 only where ONNX Runtime runs them on the
    CPU; GPU targets get the fp32 graphs (their precision lives in engines or the torch dtype)."""
    if precision != "int8":
        return "fp32"
    if executor == "torch":
        raise ValueError(f"TARGET={target} with the torch executor cannot serve PRECISION=int8: int8 is for the "
                         "ONNX Runtime graphs; the torch executor runs the checkpoint (fp32 or bf16)")
    return precision


def copy_code(source: Path, destination: Path) -> Path:
    """A model repository holding only `source`'s code (no generated file), at `destination`."""
    return shutil.copytree(source, destination, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or is_generated((Path(folder) / n).relative_to(source).as_posix())])


def clean(repository: Path, build_dir: Path | None = None) -> list[Path]:
    """Remove what `build` generated in `repository` (and `build_dir`); return what went."""
    removed = generated_files(repository)
    for path in removed:
        path.unlink()
    if build_dir is not None and build_dir.exists():
        shutil.rmtree(build_dir)
        removed.append(build_dir)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("build", help="export, validate, install and write the configs of a checkpoint")
    run.add_argument("--model", default=SEED_MODEL, help="Hub id or local checkpoint folder")
    run.add_argument("--repository", type=Path, default=Path(REPOSITORY), help="Triton model repository")
    run.add_argument("--target", choices=sorted(TARGETS), default="cpu", help="deployment target of the configs")
    run.add_argument("--executor", choices=EXECUTORS, default=None,
                     help="what runs the decoder inside t5_greedy (default: the target's); torch installs the checkpoint")
    run.add_argument("--precision", choices=ALL_PRECISIONS, default=None,
                     help="what the target serves in (default: its first, export.precision): " +
                          "; ".join(f"{t} {'|'.join(ps)}" for t, ps in PRECISIONS.items()) +
                          ". cpu int8: dynamically quantized graphs, validated against fp32 (export.quantize)")
    run.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where exports are kept and reused")
    run.add_argument("--atol", type=float, default=ATOL, help="validation: |logit difference| accepted at any scale")
    run.add_argument("--rtol", type=float, default=RTOL,
                     help="validation: |logit difference| accepted per unit of the step's max |logit|")
    tidy = commands.add_parser("clean", help="remove the generated files of the repository and the build folder")
    tidy.add_argument("--repository", type=Path, default=Path(REPOSITORY))
    tidy.add_argument("--build", type=Path, default=Path(BUILD), help="build folder to remove")
    args = parser.parse_args(argv)
    if args.command == "clean":
        for path in clean(args.repository, args.build):
            print(f"removed {path}")
        return 0
    try:
        manifest = build(args.model, args.repository, args.target, args.workdir, (args.atol, args.rtol),
                         args.precision, executor=args.executor)
    except (ValidationError, OSError) as error:
        from export.onnx_export import failure
        print(failure(args.model, error), file=sys.stderr)
        return 1
    except ValueError as error:  # a precision the target cannot serve, a model that is not T5
        print(f"cannot build: {error}", file=sys.stderr)
        return 2
    print(json.dumps(manifest["validation"], indent=2))
    if "int8" in manifest["validation"]:
        print(agreement_line(manifest["validation"]["int8"]))
    return 0


def agreement_line(report: dict) -> str:
    """The int8 validation in one line, for the console."""
    return (f"int8 ({report['weight_type']}, per channel: {report['per_channel']}) agrees with fp32 on "
            f"{report['token_agreement']:.1%} of the answer tokens, identical answers "
            f"{report['identical_answers']:.1%} ({report['prompts']} SQuAD 2.0 dev prompts, "
            f"{report['new_tokens']} new tokens; floor {report['floor']:.0%})")


if __name__ == "__main__":
    sys.exit(main())
