"""Message catalogs, one JSON file per language (package data)."""
