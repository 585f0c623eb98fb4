"""Competition-format data, by concern: `cells` (every CSV's cells: encoding, the text rule, turns, numbers),
`files` (read, validate, write CSVs), `rows` (swap, dedup, merge, the training rows of a config), `extra` (the
public arena datasets as extra training rows), `folds` (grouped stratified folds), `features` (length features),
`synthetic` (the generated sample), `teachers` (teacher probabilities for distillation), `predictions` (files of
probabilities: read, checked, scored). The names below are the package's public API."""

from arena.data.cells import DataError, parse_number
from arena.data.extra import read_extras
from arena.data.features import (
    HEAD_FEATURE_NAMES,
    LENGTH_FEATURE_NAMES,
    fit_feature_scaler,
    head_features,
    length_features,
)
from arena.data.files import TEXT_COLUMNS, label_matrix, load, load_test, read_table, validate, write_csv
from arena.data.folds import make_folds
from arena.data.predictions import (
    check_frame,
    format_score,
    ids_text,
    probabilities_path,
    read_columns,
    read_probabilities,
    score_files,
    validate_submission,
)
from arena.data.rows import dedup, merge, swap_ab, training_data
from arena.data.synthetic import generate_sample
from arena.data.teachers import Teachers, read_teachers

__all__ = [
    "HEAD_FEATURE_NAMES", "LENGTH_FEATURE_NAMES", "TEXT_COLUMNS", "DataError", "Teachers", "check_frame", "dedup",
    "format_score", "ids_text", "probabilities_path", "read_columns", "read_probabilities", "score_files", "validate_submission",
    "fit_feature_scaler", "generate_sample", "head_features", "label_matrix", "length_features", "load", "load_test",
    "make_folds", "merge", "parse_number", "read_extras", "read_table", "read_teachers", "swap_ab", "training_data",
    "validate", "write_csv",
]
