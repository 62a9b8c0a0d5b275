"""Golden test vectors (issue 11): ``python -m tests.vectors.generate [--write]``."""
