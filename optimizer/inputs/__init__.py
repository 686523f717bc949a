"""Everything moeopt reads: the instance schema (pydantic), GPU presets, the JSON/text file
readers with one-line errors and atomic writers, expert-load files (SGLang JSON, CSV, .npy) and
the HuggingFace config import. Owns validation at the boundary. Imports only ``optimizer.errors``,
``optimizer.costs.formulas`` (parameter counts for import checks) and the standard library,
pydantic and numpy: never ortools, pandas or click.
"""
