"""yaml2json.py — prints the YAML documents of a file (or stdin) as one JSON list, skipping empty ones.

Run with .tools/venv/bin/python (PyYAML from requirements/deploy.txt) so tests/deploy/test_deploy.py can
parse rendered manifests with the standard library only.
"""
import json
import sys

import yaml


def main() -> None:
    text = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else sys.stdin.read()
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    json.dump(docs, sys.stdout)


if __name__ == "__main__":
    main()
