"""Evaluation: metrics, few-label and embedding evaluation, the report and its figures."""
