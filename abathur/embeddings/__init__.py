"""Embedders for semantic recall (empty until that work lands)."""
