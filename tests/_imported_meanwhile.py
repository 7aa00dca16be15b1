"""Imported by test_cli's import_meanwhile test: a module with no side effects."""
