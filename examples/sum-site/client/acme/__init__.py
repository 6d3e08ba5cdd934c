"""Acme: a SUM client site."""
