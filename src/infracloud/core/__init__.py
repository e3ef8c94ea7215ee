"""Ids, clock, errors, settings types. Imports nothing else from infracloud."""
