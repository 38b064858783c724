"""Names shared by the CLI and the library, importable without importing anything else.

The CLI builds its choices from these, so ``certsmith --help`` needs no heavy import
and the library and the command line can never disagree about what is valid.
"""

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")
DEFAULT_KEY_TYPE = "ec256"

CHALLENGE_TYPES = ("http-01", "tls-alpn-01", "dns-01", "dns-persist-01")

# RFC 5280 §5.3.1 CRLReason codes that an ACME subscriber may give (RFC 8555 §7.6).
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}

# Well-known ACME directories, by the short names the CLI accepts.
DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "zerossl": "https://acme.zerossl.com/v2/DV90",
    "google": "https://dv.acme-v02.api.pki.goog/directory",
    "buypass": "https://api.buypass.com/acme/directory",
}
DEFAULT_DIRECTORY = DIRECTORIES["letsencrypt"]

# The files of a lineage's current version, as servers are pointed at them.
CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
FULLCHAIN_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"
LINEAGE_FILES = (CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE)
