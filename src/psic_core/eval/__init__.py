"""Evaluation: metrics and benchmark helpers."""
