"""Kaldi binary/text primitives and file handling."""
