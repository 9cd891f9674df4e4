"""Bundled fonts (package data) and their SIL Open Font License texts."""
