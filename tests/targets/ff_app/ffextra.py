"""Importable but never imported by app.py: a bundle module for a later import."""
VALUE = 1
