"""The package version (a module of its own, so low layers can name it without importing the API)."""
__version__ = "0.1.0"
