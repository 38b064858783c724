"""DNS providers for dns-01: they create and delete TXT records by name, nothing more."""

from certsmith.dns.base import DnsProvider, EnvVar, ProviderInfo, available_providers, load_provider

__all__ = ["DnsProvider", "EnvVar", "ProviderInfo", "available_providers", "load_provider"]
