"""certsmith's public test kit: a Pebble launcher and the DNS provider conformance check.

They let users test their own integrations (a DNS provider plugin, a deploy script)
offline against the same real ACME server certsmith's own tests use.
"""
