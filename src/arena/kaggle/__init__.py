"""Kaggle, by concern: `credentials`, `remote` (the kaggle CLI and the data download), `wheels` and `bundle`
(`arena package`), `preflight` (the projected kernel wall time), `rehearsal` (`arena kernel run-local`) and
`push` (`arena push`, with --dry-run). Only `remote` runs the kaggle CLI, after a credentials check."""
