"""The one build pipeline: checkpoint → ONNX export and validation (`export`) → install into a
model repository → `config.pbtxt` files for a target (`serving.repository`). `make export`,
`make bench`, `make serve` (`serving.serve`), the benchmark and the tests all go through
`build`; `make clean` through `clean`.

  python -m serving.pipeline build --model mrm8488/t5-base-finetuned-squadv2 --target cpu
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
from export.onnx_export import export_model, failure, install, install_checkpoint
from export.validate import ATOL, RTOL, ValidationError
from serving.repository import EXECUTORS, TARGETS, write_repository


def build(model: str, repository: Path, target: str = "cpu", workdir: Path = DEFAULT_WORKDIR,
          tolerance: tuple[float, float] = (ATOL, RTOL), **config_options) -> dict:
    """Export and validate `model` (reusing an earlier export of the same checkpoint), install
    it into `repository`, write the configs of `target`; return the export manifest.
    `config_options` go to `serving.repository.write_repository` (decoder_mode, batching, ...)."""
    exported = workdir_for(model, workdir)
    manifest = export_model(model, exported, *tolerance)
    install(exported, repository)
    if (config_options.get("executor") or TARGETS[target].executor) == "torch":
        install_checkpoint(model, repository)
    write_repository(repository, target, **config_options)
    return manifest


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
                         executor=args.executor)
    except (ValidationError, OSError) as error:
        print(failure(args.model, error), file=sys.stderr)
        return 1
    print(json.dumps(manifest["validation"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
