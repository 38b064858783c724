"""The ``certsmith`` command line: parse, build a manager, call it, print.

Only ``click`` is imported at start-up; the protocol and crypto are imported when a
command that talks to a CA runs, so ``certsmith --help``, ``list`` and ``show`` stay
fast (tests/unit/test_lazy_imports.py keeps them so). Progress is plain text through
click (coloured on a terminal): rich would cost every ``issue`` tens of milliseconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, cast

import click

from certsmith._constants import CHALLENGE_TYPES, DEFAULT_KEY_TYPE, KEY_TYPES, REVOCATION_REASONS

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from types import ModuleType

    from certsmith.manager import Manager, RenewOutcome
    from certsmith.storage.base import Store

T = TypeVar("T")


@dataclass
class Context:
    directory: str | None
    ca_bundle: str | None
    state_dir: str | None
    json: bool
    verbosity: int
    env_file: str | None = None
    lock_wait: float = 0.0
    store_url: str | None = None
    store_ca_bundle: str | None = None
    store_insecure_keys: bool = False
    rate_limits: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """The process environment over the env file's variables (``--env-file``, or /etc/certsmith/env for root)."""
        import os
        from pathlib import Path

        from certsmith.envfile import default_env_file, environment_with

        chosen = Path(self.env_file) if self.env_file else default_env_file()
        return environment_with(chosen, os.environ)

    def state_path(self) -> Path:
        from pathlib import Path

        if self.state_dir:
            return Path(self.state_dir)
        from certsmith.storage.files import FileStore

        return FileStore.default_root()

    def store(self) -> Store:
        """The file store of --state-dir, or the shared store of --store or CERTSMITH_STORE (redis://...).

        CERTSMITH_STORE is read from the env file too, as a timer's run gets it.
        """
        from certsmith.storage import open_store

        if not self.store_url:
            self.store_url = self.environment().get("CERTSMITH_STORE") or None
        if not self.store_url:
            if self.store_ca_bundle or self.store_insecure_keys:
                from certsmith.errors import ConfigError

                raise ConfigError("--store-ca-bundle and --store-insecure-keys need --store redis://... (or rediss://)")
            return open_store(self.state_path())
        return open_store(
            self.store_url, env=self.environment(), ca_bundle=self.store_ca_bundle,
            insecure_keys=self.store_insecure_keys,
        )

    def manager(self) -> Manager:
        from pathlib import Path

        # httpx's package __init__ imports its command-line tool (click, rich, pygments: ~70 ms)
        # when those happen to be installed; this process never runs httpx's CLI.
        # A None entry makes `from ._main import main` fail with ImportError, httpx's own fallback.
        sys.modules.setdefault("httpx._main", cast("ModuleType", None))
        from certsmith.errors import ConfigError
        from certsmith.manager import Manager
        from certsmith.settings import resolve_directory

        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"--ca-bundle {self.ca_bundle} is not a readable file")
        try:
            directory = resolve_directory(self.directory)
        except ConfigError as exc:
            raise ConfigError(f"--directory: {exc}") from None
        return Manager(
            self.store(), directory, ca_bundle=self.ca_bundle, env=self.environment(), on_event=self.progress,
            lock_wait=self.lock_wait, rate_limits=self.rate_limit_overrides(directory),
        )

    def rate_limit_overrides(self, directory: str) -> dict[str, Any]:
        """The --rate-limit values by directory URL (those without @CA are for ``directory``)."""
        from certsmith.ratelimit import parse_limit_options
        from certsmith.settings import resolve_directory

        return parse_limit_options(self.rate_limits, directory, resolve_directory)

    def progress(self, kind: str, message: str) -> None:
        """Progress on stderr, one line per event (the bullet coloured when stderr is a terminal)."""
        if self.verbosity < 0:
            return
        from certsmith._text import clean

        colour = "green" if kind in ("stored", "validated", "finalized") else "cyan"
        click.echo(click.style("•", fg=colour) + f" {clean(message, 1000)}", err=True)

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """One JSON document on stdout with --json, else the human rendering."""
        if self.json:
            import json

            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            human()


def _run(ctx: Context, coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine, turning certsmith errors into one line (with advice) and exit status 1.

    Verbosity: ``-v`` info, ``-vv`` debug, ``-vvv`` also every ACME request and response
    (logger ``certsmith.wire``). Registered secrets are masked in every log line.
    """
    import asyncio
    import logging

    from certsmith._redact import RedactingFormatter
    from certsmith.errors import CertsmithError

    level = logging.WARNING if ctx.verbosity <= 0 else logging.INFO if ctx.verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("certsmith.wire").setLevel(logging.DEBUG if ctx.verbosity >= 3 else logging.INFO)
    for noisy in ("httpx", "httpcore"):  # certsmith.wire shows the exchange; the HTTP library's own log only repeats it
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return asyncio.run(_until_signalled(coro_factory))
    except CertsmithError as exc:
        from certsmith.cli.advice import advice

        _fail(ctx, str(exc), advice=advice(exc))
    except KeyboardInterrupt:
        _fail(ctx, "interrupted", status=130)
    except _Signalled as exc:
        _fail(ctx, f"stopped by {exc.name}", status=128 + exc.signum)
    except Exception as exc:
        _unexpected(ctx, exc)


def _unexpected(ctx: Context, exc: Exception) -> NoReturn:
    """The last resort for a bug or an input nothing anticipated: one line; the traceback with -vv."""
    import logging

    logging.getLogger("certsmith").debug("unexpected error", exc_info=exc)
    hint = "" if ctx.verbosity >= 2 else "; run with -vv for the details"
    _fail(ctx, f"unexpected error ({type(exc).__name__}: {exc}){hint}")


class _Signalled(Exception):
    """SIGTERM or SIGHUP ended the command after its cleanup ran."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


async def _until_signalled(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the command; SIGTERM (systemd, ``timeout``, ``kill``) and SIGHUP stop it as Ctrl-C does.

    The command's task is cancelled, so DNS records and web-root files it created are removed
    and listeners closed before the process exits with 128 + the signal's number.
    """
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    handled = (signal.SIGTERM, signal.SIGHUP)
    for signum in handled:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await coro_factory()
    except asyncio.CancelledError:
        if received:
            raise _Signalled(received[0]) from None
        raise
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _call(ctx: Context, function: Callable[[], T]) -> T:
    """:func:`_run` for commands that only read local state: no event loop, no logging set-up.

    ``list`` and ``show`` go through here so they import neither asyncio nor the ACME
    client (tests/e2e/test_lazy_imports.py guards that).
    """
    from certsmith.errors import CertsmithError

    try:
        return function()
    except CertsmithError as exc:
        from certsmith.cli.advice import advice

        _fail(ctx, str(exc), advice=advice(exc))
    except KeyboardInterrupt:
        _fail(ctx, "interrupted", status=130)
    except Exception as exc:
        _unexpected(ctx, exc)


def _exit(status: int) -> NoReturn:
    """End an ``issue``/``renew`` process: flush, then skip the interpreter's tear-down.

    By now the manager is closed (every connection, file and lock released, hooks
    waited for) and the results are printed; tearing down the modules that the
    protocol, crypto and HTTP stack loaded only costs CPU time. In-process callers
    (a test's ``CliRunner`` swaps ``sys.stdout``) get a normal ``SystemExit``.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:
        import os

        os._exit(status)
    raise SystemExit(status)


def _fail(ctx: Context, message: str, status: int = 1, *, advice: str | None = None) -> NoReturn:
    """Print the error (and the advice, when there is some) on stderr, and as JSON with ``--json``; exit."""
    from certsmith._redact import redact
    from certsmith._text import clean

    message = clean(redact(message), 2000, keep_newlines=True)
    if ctx.json:
        import json

        document: dict[str, Any] = {"ok": False, "error": message}
        if advice:
            document["advice"] = advice
        click.echo(json.dumps(document, indent=2))
    line = f"{message}; {advice}" if advice else message
    click.echo(click.style("error: ", fg="red", bold=True) + line, err=True)
    raise SystemExit(status)


pass_ctx = click.make_pass_decorator(Context)


def _lock_wait_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--wait SECONDS``: how long to wait for a certificate another certsmith process is working on."""

    def remember(click_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
        owner = click_ctx.find_object(Context)
        if value is not None and owner is not None:
            owner.lock_wait = value
        return value

    return click.option(
        "--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS", expose_value=False,
        callback=remember, help="Wait up to SECONDS for a certificate another certsmith process is working on.",
    )(command)


class _Commands(click.Group):
    """The top-level group: the commands defined in the modules below are imported when they are looked up.

    ``issue`` and ``renew`` never load them (``schedule`` alone brings ``locale``); ``--help``
    and shell completion look every command up, so they list them as before.
    """

    lazy: ClassVar[tuple[str, ...]] = ("deploy", "persist", "schedule", "store", "sync")  # certsmith.cli.NAME

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # An unknown name loads them all, for click's "Did you mean ...?" among every command.
        wanted = [cmd_name] if cmd_name in self.lazy else [] if cmd_name in self.commands else self.lazy
        for name in wanted:
            if name not in self.commands:
                module = f"certsmith.cli.{name}"
                __import__(module)  # importlib.import_module would hide it from -X importtime (the tests read that)
                command: click.Command = getattr(sys.modules[module], name)
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--directory",
    envvar="CERTSMITH_DIRECTORY",
    metavar="URL|NAME",
    help="ACME directory URL, or letsencrypt (default), letsencrypt-staging, zerossl, google, buypass.",
)
@click.option(
    "--ca-bundle",
    envvar="CERTSMITH_CA_BUNDLE",
    type=click.Path(dir_okay=False),
    help="PEM file of roots to trust for the ACME server's TLS (verification is always on).",
)
@click.option(
    "--state-dir",
    envvar="CERTSMITH_STATE_DIR",
    type=click.Path(file_okay=False),
    help="Where accounts and certificates live (default /var/lib/certsmith as root, else ~/.local/share/certsmith).",
)
@click.option(
    "--env-file",
    envvar="CERTSMITH_ENV_FILE",
    type=click.Path(dir_okay=False),
    help="KEY=VALUE file of provider secrets for unattended runs (0600; default /etc/certsmith/env for root).",
)
@click.option(
    "--store",
    "store_url",
    envvar="CERTSMITH_STORE",
    metavar="URL",
    help="A store shared by several hosts instead of --state-dir: redis://[:password@]host:port/db or rediss://.",
)
@click.option(
    "--store-ca-bundle",
    envvar="CERTSMITH_STORE_CA_BUNDLE",
    type=click.Path(dir_okay=False),
    help="PEM file of roots to trust for a rediss:// store's TLS.",
)
@click.option(
    "--store-insecure-keys",
    is_flag=True,
    help="Let --store keep private keys unencrypted when CERTSMITH_STORE_KEY(_FILE) is not set.",
)
@click.option(
    "--rate-limit",
    "rate_limits",
    multiple=True,
    envvar="CERTSMITH_RATE_LIMITS",
    metavar="NAME=COUNT/PERIOD[@CA]",
    help="Override the shared rate limiter (repeatable, or comma-separated): new-orders, certs-per-domain, "
    "duplicate-certs, new-accounts; NAME=off or off to lift; @CA for another CA than --directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More detail on stderr: -v info, -vv debug, -vvv also every ACME request and response (secrets masked).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.version_option(package_name="certsmith", prog_name="certsmith")
@click.pass_context
def main(
    click_ctx: click.Context,
    directory: str | None,
    ca_bundle: str | None,
    state_dir: str | None,
    env_file: str | None,
    store_url: str | None,
    store_ca_bundle: str | None,
    store_insecure_keys: bool,
    rate_limits: tuple[str, ...],
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Get and renew TLS certificates from Let's Encrypt and any other ACME CA."""
    click_ctx.obj = Context(directory, ca_bundle, state_dir, as_json, -1 if quiet else verbose, env_file)
    click_ctx.obj.store_url = store_url
    click_ctx.obj.store_ca_bundle = store_ca_bundle
    click_ctx.obj.store_insecure_keys = store_insecure_keys
    click_ctx.obj.rate_limits = rate_limits


# -- account -------------------------------------------------------------------------


@main.group()
def account() -> None:
    """Register and manage the ACME account of the chosen directory."""


@account.command("register")
@click.option("--email", "-m", multiple=True, help="Contact address (repeatable).")
@click.option("--agree-tos", is_flag=True, help="Agree to the CA's terms of service.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default=DEFAULT_KEY_TYPE, show_default=True)
@click.option("--eab-kid", envvar="CERTSMITH_EAB_KID", help="External account binding key ID from the CA.")
@click.option(
    "--eab-hmac-key",
    envvar="CERTSMITH_EAB_HMAC_KEY",
    help="External account binding HMAC key (base64url); prefer the variable, which ps cannot show.",
)
@pass_ctx
def account_register(
    ctx: Context, email: tuple[str, ...], agree_tos: bool, key_type: str, eab_kid: str | None, eab_hmac_key: str | None
) -> None:
    """Create an account (or show the one already stored)."""

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            stored = await manager.accounts.register(
                manager.directory_url, manager.ca_bundle, email=email, agree_tos=agree_tos, key_type=key_type,
                eab_kid=eab_kid, eab_hmac_key=eab_hmac_key,
            )
            return {"ok": True, "directory": manager.directory_url, "url": stored.url, "contact": list(stored.contact)}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo(f"account {result['url']}"))


@account.command("show")
@pass_ctx
def account_show(ctx: Context) -> None:
    """Show the account as the CA sees it."""

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            return {"ok": True, **await manager.accounts.info(manager.directory_url, manager.ca_bundle)}

    result = _run(ctx, run)
    ctx.emit(result, lambda: _print_fields(result, ["url", "status", "contact", "key_type", "directory", "created_at"]))


@account.command("update")
@click.option("--email", "-m", multiple=True, required=True, help="New contact address (repeatable).")
@pass_ctx
def account_update(ctx: Context, email: tuple[str, ...]) -> None:
    """Replace the account's contact addresses."""

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            stored = await manager.accounts.update(manager.directory_url, manager.ca_bundle, email=email)
            return {"ok": True, "url": stored.url, "contact": list(stored.contact)}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo("contact: " + ", ".join(result["contact"])))


@account.command("rollover")
@click.option("--key-type", type=click.Choice(KEY_TYPES), help="Type of the new key (default: same).")
@pass_ctx
def account_rollover(ctx: Context, key_type: str | None) -> None:
    """Replace the account key at the CA; the old key is archived."""

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            stored = await manager.accounts.rollover(manager.directory_url, manager.ca_bundle, key_type=key_type)
            return {"ok": True, "url": stored.url}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo(f"new key in use for {result['url']}"))


@account.command("deactivate")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def account_deactivate(ctx: Context, yes: bool) -> None:
    """Deactivate the account for good (the CA will refuse it afterwards)."""
    if not yes and sys.stdin.isatty():
        click.confirm("Deactivate the account? This cannot be undone", abort=True)

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            stored = await manager.accounts.deactivate(manager.directory_url, manager.ca_bundle)
            return {"ok": True, "url": stored.url, "status": stored.status}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo(f"account {result['url']} is {result['status']}"))


# -- certificates --------------------------------------------------------------------


@main.command()
@click.option("-d", "--domain", "domains", multiple=True, metavar="NAME", help="Name to certify (repeatable).")
@click.option("--name", "lineage", help="Lineage name (default: the first name, *. written as _.).")
@click.option("--challenge", type=click.Choice(CHALLENGE_TYPES), default=None)
@click.option("--http-port", type=int, default=80, show_default=True, help="Port of the built-in http-01 server.")
@click.option("--http-address", default="", metavar="ADDRESS", help="Listen for http-01 here only (default: all).")
@click.option("--webroot", type=click.Path(file_okay=False), help="Serve http-01 from this web root instead.")
@click.option("--http-shared", is_flag=True,
              help="Also publish http-01 answers in the store for `certsmith serve-challenges` on every host.")
@click.option("--tls-port", type=int, default=443, show_default=True, help="Port of the tls-alpn-01 responder.")
@click.option("--tls-address", default="", metavar="ADDRESS", help="Listen for tls-alpn-01 here only (default: all).")
@click.option("--dns", "dns_provider", metavar="PROVIDER", help="DNS provider for dns-01 (see: certsmith dns list).")
@click.option("--dns-resolver", multiple=True, metavar="HOST:PORT", help="Check propagation at these servers only.")
@click.option("--propagation-timeout", type=float, metavar="SECONDS", help="How long to wait for DNS propagation.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default=DEFAULT_KEY_TYPE, show_default=True)
@click.option("--csr", type=click.Path(dir_okay=False), help="Use this CSR (PEM or DER) instead of a new key.")
@click.option("--reuse-key", is_flag=True, help="Keep the lineage's private key on renewal.")
@click.option("--preferred-chain", metavar="ISSUER_CN", help="Prefer the chain whose top issuer has this CN.")
@click.option("--profile", help="Certificate profile the CA must offer (refused before anything is sent otherwise).")
@click.option("--preferred-profile", metavar="PROFILE", help="Ask for this profile when offered, else the default.")
@click.option("--deploy-hook", metavar="CMD", help="Shell command run after the certificate is stored.")
@click.option("--deploy", "deploy_targets", multiple=True, metavar="TARGET[:KEY=VALUE,...]",
              help="Deliver the certificate after every issuance and renewal (repeatable; see: certsmith deploy list).")
@click.option("--email", "-m", multiple=True, help="Register an account with this contact if none exists.")
@click.option("--agree-tos", is_flag=True, help="Agree to the CA's terms of service when registering.")
@click.option("--eab-kid", envvar="CERTSMITH_EAB_KID", help="External account binding key ID, when registering.")
@click.option("--eab-hmac-key", envvar="CERTSMITH_EAB_HMAC_KEY", help="External account binding HMAC key (base64url).")
@click.option("--force", is_flag=True, help="Order a new certificate even when the stored one is valid and not due.")
@_lock_wait_option
@pass_ctx
def issue(
    ctx: Context,
    domains: tuple[str, ...],
    lineage: str | None,
    challenge: str | None,
    http_port: int,
    http_address: str,
    webroot: str | None,
    http_shared: bool,
    tls_port: int,
    tls_address: str,
    dns_provider: str | None,
    dns_resolver: tuple[str, ...],
    propagation_timeout: float | None,
    key_type: str,
    csr: str | None,
    reuse_key: bool,
    preferred_chain: str | None,
    profile: str | None,
    preferred_profile: str | None,
    deploy_hook: str | None,
    deploy_targets: tuple[str, ...],
    email: tuple[str, ...],
    agree_tos: bool,
    eab_kid: str | None,
    eab_hmac_key: str | None,
    force: bool,
) -> None:
    """Obtain a certificate and store it as a lineage.

    Running it again for a lineage whose certificate is valid and not due keeps that
    certificate (exit 0) unless --force is given; other names replace it.

    \b
    Examples:
      certsmith issue -d example.com -d www.example.com --email me@example.com --agree-tos
      certsmith issue -d example.com -d '*.example.com' --challenge dns-01 --dns alidns
    """

    async def run() -> dict[str, Any]:
        from pathlib import Path

        from certsmith.cli.deploy import parse_specs
        from certsmith.errors import ConfigError
        from certsmith.settings import CertificateRequest, ChallengeSettings

        if not domains and not csr:
            raise ConfigError("give at least one name with -d NAME (or a CSR with --csr FILE)")
        chosen = challenge or ("dns-01" if dns_provider else "http-01")
        if chosen == "dns-01" and not dns_provider:
            raise ConfigError("dns-01 needs a DNS provider: add --dns PROVIDER (see: certsmith dns list)")
        settings = ChallengeSettings(
            challenge=chosen,
            http_port=http_port,
            http_host=http_address,
            webroot=str(Path(webroot).resolve()) if webroot else None,
            tls_port=tls_port,
            tls_host=tls_address,
            dns_provider=dns_provider,
            dns_resolvers=dns_resolver,
            propagation_timeout=propagation_timeout,
            http_shared=http_shared,
        )
        csr_der = None
        if csr:
            from certsmith.crypto import load_csr

            try:
                data = Path(csr).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the CSR {csr}: {exc.strerror}") from None
            csr_der, _ = load_csr(data, f"the CSR {csr}")
        request = CertificateRequest(
            names=domains,
            lineage=lineage,
            challenge=settings,
            key_type=key_type,
            csr_der=csr_der,
            reuse_key=reuse_key,
            preferred_chain=preferred_chain,
            profile=profile,
            preferred_profile=preferred_profile,
            deploy_hook=deploy_hook,
            deploy=parse_specs(deploy_targets),
        )
        async with ctx.manager() as manager:
            request = await manager.preflight(request)  # nothing is registered or ordered before this passes
            await manager.clean_leftovers()
            await manager.accounts.ensure(
                manager.directory_url, manager.ca_bundle, email=email, agree_tos=agree_tos,
                eab_kid=eab_kid, eab_hmac_key=eab_hmac_key,
            )
            result = await manager.issue(request, force=force)
        return {"ok": result.deploy_error is None, **result.to_json()}

    result = _run(ctx, run)
    ctx.emit(result, lambda: _print_issued(result) if result["issued"] else _print_kept(result))
    if result.get("deploy_error"):
        click.echo(click.style("error: ", fg="red", bold=True) + result["deploy_error"], err=True)
        _exit(1)
    _exit(0)


def _print_kept(result: dict[str, Any]) -> None:
    click.echo(f"{result['name']}: certificate kept, {result['reason']} (--force orders a new one)")


def _print_issued(result: dict[str, Any]) -> None:
    click.echo(f"Certificate for {', '.join(result['names'])}")
    click.echo(f"  issuer:    {result['issuer']}")
    click.echo(f"  expires:   {result['not_after']}")
    click.echo(f"  files in:  {result['directory']}")
    for name in ("fullchain.pem", "privkey.pem", "cert.pem", "chain.pem"):
        click.echo(f"             {name}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Renew even when not due.")
@_lock_wait_option
@click.option(
    "--jitter",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="First wait a random 0..SECONDS, to spread many hosts' renewals (cron uses it; plain runs start at once).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1000),
    default=None,
    metavar="N",
    help="Work on at most N certificates at once (default 32); hosts sharing a store split the rest.",
)
@pass_ctx
def renew(ctx: Context, names: tuple[str, ...], force: bool, jitter: float, concurrency: int | None) -> None:
    """Renew every due certificate, each at the CA that issued it.

    \b
    Due means: the CA's renewal window (ARI) has begun, or, where the CA has no ARI,
    less than a third of the lifetime is left (half for lifetimes under 10 days);
    revoked and expired certificates are due at once. Without --directory every CA's
    lineages are checked; --directory narrows to one CA. Secrets come from the
    environment or --env-file. One line per lineage; exit status 1 when any failed;
    with -q nothing is printed unless something was renewed, deferred or failed. A lineage
    the rate limiter defers (see --rate-limit) is reported "deferred" with the limit and when
    a token frees up; it is not a failure (exit 0): the next scheduled run renews it.
    """

    async def run() -> list[dict[str, Any]]:
        if jitter:
            import asyncio
            import random

            from certsmith.schedule import jitter_delay

            await asyncio.sleep(jitter_delay(jitter, random.SystemRandom()))
        async with ctx.manager() as manager:
            if concurrency is not None:
                manager.renew_concurrency = concurrency
            await manager.clean_leftovers()
            narrowed = manager.directory_url if ctx.directory else None
            outcomes = await manager.renew(_lineage_names(names), force=force, directory_url=narrowed)
            return [_renew_json(outcome) for outcome in outcomes]

    outcomes = _run(ctx, run)
    failed = [o for o in outcomes if o.get("error")]

    def human() -> None:
        quiet = ctx.verbosity < 0
        if not outcomes and not quiet:
            click.echo("no certificates to renew")
        for outcome in outcomes:
            if quiet and not outcome["renewed"] and not outcome.get("error") and not outcome.get("deferred"):
                continue
            state = "renewed" if outcome["renewed"] else "failed" if outcome.get("error") else "kept"
            state = "deferred" if outcome.get("deferred") else state
            detail = outcome.get("error") or outcome.get("deploy_error") or outcome.get("deferred") or outcome["reason"]
            hint = f"; {outcome['advice']}" if outcome.get("advice") else ""
            click.echo(f"{outcome['name']}: {state} ({detail}){hint}")

    ctx.emit({"ok": not failed, "results": outcomes}, human)
    _exit(1 if failed or any(o.get("deploy_error") for o in outcomes) else 0)


@main.command("serve-challenges")
@click.option("--http-port", type=int, default=80, show_default=True, help="Port to answer http-01 on.")
@click.option("--http-address", default="", metavar="ADDRESS", help="Listen here only (default: all addresses).")
@pass_ctx
def serve_challenges(ctx: Context, http_port: int, http_address: str) -> None:
    """Answer the http-01 challenges that `issue --http-shared` published in the store, until stopped.

    Run it on every host the CA may reach (or behind the web server's proxy_pass of
    /.well-known/acme-challenge/); unknown tokens get 404. SIGTERM or Ctrl-C stops it (exit 0).
    """
    import asyncio
    import signal

    from certsmith.errors import CertsmithError, ConfigError

    async def run() -> None:
        from certsmith.challenges.http01 import SharedHttp01Responder

        if not 0 < http_port < 65536:
            raise ConfigError(f"--http-port {http_port} is not between 1 and 65535")
        store = ctx.store()
        responder = SharedHttp01Responder(store, port=http_port, host=http_address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        await responder.start()
        ctx.progress("serving", f"answering http-01 from {store!r} on {http_address or 'all addresses'} "
                     f"port {http_port}")
        try:
            await stop.wait()
        finally:
            await responder.aclose()

    try:
        asyncio.run(run())
    except CertsmithError as exc:
        from certsmith.cli.advice import advice

        _fail(ctx, str(exc), advice=advice(exc))


@main.command()
@pass_ctx
def cleanup(ctx: Context) -> None:
    """Remove DNS records and web-root files that a killed certsmith run left behind.

    issue and renew do this on their own first; the provider's secrets must be in the
    environment or the env file, as for renew.
    """

    async def run() -> list[str]:
        async with ctx.manager() as manager:
            return await manager.clean_leftovers()

    removed = _run(ctx, run)
    ctx.emit({"ok": True, "removed": removed}, lambda: click.echo(f"removed {len(removed)} leftover(s)"))


@main.command()
@click.argument("name")
@click.option("--reason", type=click.Choice(list(REVOCATION_REASONS)), default="unspecified", show_default=True)
@pass_ctx
def revoke(ctx: Context, name: str, reason: str) -> None:
    """Revoke the current certificate of lineage NAME."""

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            return {"ok": True, **await manager.revoke(_lineage_names((name,))[0], reason=reason)}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo(f"{name}: certificate {result['serial']} revoked ({reason})"))


@main.command()
@click.argument("name")
@click.option("--revoke", "revoke_first", is_flag=True, help="Revoke the current certificate first.")
@click.option("--reason", type=click.Choice(list(REVOCATION_REASONS)), default="unspecified", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def delete(ctx: Context, name: str, revoke_first: bool, reason: str, yes: bool) -> None:
    """Delete lineage NAME and every version of it (refused while it is being renewed)."""
    lineage = _lineage_names((name,))[0]
    if not yes:
        if not sys.stdin.isatty():
            _fail(ctx, f"deleting {lineage!r} needs confirmation; add --yes")
        click.confirm(f"Delete {lineage} and all its versions{' after revoking it' if revoke_first else ''}?",
                      abort=True, err=True)

    async def run() -> dict[str, Any]:
        async with ctx.manager() as manager:
            return {"ok": True, **await manager.delete(lineage, revoke=revoke_first, reason=reason)}

    result = _run(ctx, run)
    ctx.emit(result, lambda: click.echo(f"{lineage}: deleted" + (" (revoked first)" if result["revoked"] else "")))


def _renew_json(outcome: RenewOutcome) -> dict[str, Any]:
    """One lineage's renewal outcome, with advice naming flags or commands when it failed."""
    from certsmith.cli.advice import advice

    data = outcome.to_json()
    hint = advice(outcome.exception) if outcome.exception is not None else None
    if hint:
        data["advice"] = hint
    return data


def _lineage_names(names: tuple[str, ...]) -> list[str]:
    """Lineage names as typed, normalised the way ``issue`` derives them (``MiXed.Example.com``)."""
    normalised = [name.strip().rstrip(".").lower() for name in names]
    return ["_." + name[2:] if name.startswith("*.") else name for name in normalised]


def _lineages(ctx: Context, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    from certsmith._time import utc_now

    store = ctx.store()
    now = utc_now()
    rows = []
    for name in _lineage_names(names) or store.lineage_names():
        row = _lineage_row(store, name, now)
        row["path"] = store.location(name)
        rows.append(row)
    return rows


def _lineage_row(store: Store, name: str, now: datetime) -> dict[str, Any]:
    """What ``list`` and ``show`` print for one lineage; a damaged one says why instead."""
    from certsmith.errors import ConfigError, StorageError
    from certsmith.policy import lineage_summary
    from certsmith.settings import CertificateRequest

    try:
        meta = store.load_meta(name)
        if meta is not None:
            CertificateRequest.from_lineage(meta)  # the stored settings a renewal needs must be readable
            return lineage_summary(meta, store.load_state(name), now)
    except (StorageError, ConfigError, ValueError) as exc:
        return {"name": name, "status": "damaged", "error": str(exc), "names": []}
    raise ConfigError(f"no certificate named {name!r}; see: certsmith list")


@main.command("list")
@pass_ctx
def list_(ctx: Context) -> None:
    """List stored certificates."""

    rows = _call(ctx, lambda: _lineages(ctx))

    def human() -> None:
        if not rows:
            click.echo("no certificates")
        for row in rows:
            if row["status"] == "damaged":
                click.echo(f"{row['name']:<30} damaged: {row['error']}")
                continue
            click.echo(
                f"{row['name']:<30} {row['status']:<9} {row['days_left']:>4} days left  {row['key_type']:<8} "
                f"{', '.join(row['names'])}  ({row['issuer']})"
            )

    ctx.emit({"ok": True, "certificates": rows}, human)


@main.command()
@click.argument("name")
@pass_ctx
def show(ctx: Context, name: str) -> None:
    """Show one certificate lineage."""

    row = _call(ctx, lambda: _lineages(ctx, (name,))[0])
    ctx.emit(
        {"ok": True, **row},
        lambda: _print_fields(
            row,
            ["name", "names", "status", "not_after", "days_left", "renewal_at", "renewal_reason", "issuer",
             "key_type", "profile", "serial", "directory", "path", "error"],
        ),
    )


def _print_fields(data: dict[str, Any], keys: list[str]) -> None:
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        click.echo(f"{key.replace('_', ' ') + ':':<12} {value}")


# -- dns -----------------------------------------------------------------------------


@main.group()
def dns() -> None:
    """DNS providers for dns-01."""


@dns.command("list")
@click.option("--markdown", is_flag=True, help="Print the providers as Markdown tables (the README's section).")
@click.option("--lexicon", "with_lexicon", is_flag=True, help="Also list every dns-lexicon provider with its options.")
@pass_ctx
def dns_list(ctx: Context, markdown: bool, with_lexicon: bool) -> None:
    """Every DNS provider with its environment variables and an example."""
    from certsmith.dns.base import available_providers, provider_class
    from certsmith.dns.lexicon_bridge import INSTALL_HINT, PREFIX, lexicon_installed, lexicon_provider_names
    from certsmith.errors import ConfigError

    infos = [provider_class(name).info for name in available_providers()]
    lexicon_names = lexicon_provider_names()
    if with_lexicon:
        if not lexicon_installed():
            raise ConfigError(f"dns-lexicon is not installed: {INSTALL_HINT}")
        for name in lexicon_names:
            try:
                infos.append(provider_class(PREFIX + name).info)
            except ConfigError:  # a provider whose own extra (e.g. boto3 for route53) is not installed
                continue
    if markdown:
        from certsmith.dns.docs import providers_markdown

        click.echo(providers_markdown(infos), nl=False)
        return
    providers: list[dict[str, Any]] = []
    for info in infos:
        providers.append(
            {
                "name": info.name,
                "title": info.title,
                "description": info.description,
                "env": [
                    {
                        "name": var.name,
                        "description": var.description,
                        "required": var.required,
                        "secret": var.secret,
                        "default": var.default,
                        "aliases": list(var.aliases),
                    }
                    for var in info.env
                ],
                "example": info.example,
                "links": list(info.links),
            }
        )
    lexicon_summary = {"installed": lexicon_installed(), "providers": len(lexicon_names)}

    def human() -> None:
        for provider in providers:
            click.echo(click.style(provider["name"], bold=True) + f"  {provider['title']}: {provider['description']}")
            for var in provider["env"]:
                flag = "required" if var["required"] else f"default {var['default']}" if var["default"] else "optional"
                also = f" (also {', '.join(var['aliases'])})" if var["aliases"] else ""
                secret = f"; secret, or {var['name']}_FILE" if var["secret"] else ""
                click.echo(f"    {var['name']:<34} {flag:<22} {var['description']}{also}{secret}")
            if provider["example"]:
                click.echo("  example:")
                for line in provider["example"].splitlines():
                    click.echo(f"    {line}")
            click.echo()
        if lexicon_names and not with_lexicon:
            click.echo(
                click.style("lexicon:<provider>", bold=True)
                + f" — {len(lexicon_names)} providers via dns-lexicon (certsmith dns list --lexicon shows them)"
            )
        elif not lexicon_names:
            click.echo(f"lexicon:<provider> — about 90 more providers with dns-lexicon: {INSTALL_HINT}")

    ctx.emit({"ok": True, "providers": providers, "lexicon": lexicon_summary}, human)

