"""certsmith's public test kit: a Pebble launcher (``pebble``), an opt-in pytest plugin with a
ready ACME server fixture (``pytest_plugin``) and the DNS provider conformance check.

They let users test their own integrations (a DNS provider plugin, a deploy script)
offline against the same real ACME server certsmith's own tests use.
"""
