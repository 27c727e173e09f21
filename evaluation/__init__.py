"""SQuAD 2.0 evaluation of the served model: the official metric (`evaluation.squad_v2`), the
dev-set runner (`python -m evaluation`, `make eval`) and its in-process `transformers`
reference (`evaluation.reference`)."""
