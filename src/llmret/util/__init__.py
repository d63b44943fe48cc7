"""Shared helpers: errors, atomic files, caches, settings layers, tables."""
