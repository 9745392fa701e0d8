"""Evaluation: decoding with Vosk, scoring, comparison tables and plots."""
