"""certsmith: a fast, complete ACME client and command-line tool."""

__version__ = "0.1.0"
