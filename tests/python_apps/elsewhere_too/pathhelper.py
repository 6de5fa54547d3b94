"""Imported by elsewhere/pathapp.py, from the second --pythonpath entry."""

NAME = "pathhelper"
