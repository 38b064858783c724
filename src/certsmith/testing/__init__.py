"""Test harnesses shipped with certsmith: a Pebble launcher and cloud DNS API emulators.

They are part of the package so that users can test their own automation against
the same real parts certsmith's own test suite uses.
"""
