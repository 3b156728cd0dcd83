"""The reliability target's application package (tests/test_fault_*, test_soak, scripts/soak.py)."""
