"""The deadline tests' application package (tests/test_engine_deadlines.py)."""
