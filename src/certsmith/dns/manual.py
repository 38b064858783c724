"""The ``manual`` provider: a person adds the TXT record and presses Enter.

For a one-off certificate on a DNS host without an API. The record to create is
printed on stderr and certsmith waits for Enter on stdin, one record at a time;
``cleanup`` prints what may be deleted again. Without an interactive terminal it
fails at once instead of waiting for input that cannot come.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self, TextIO

from certsmith.dns.base import ConfiguredProvider, EnvVar, ProviderInfo, read_env
from certsmith.errors import DnsError

if TYPE_CHECKING:
    import asyncio

NAME = "manual"


def _read_line(stream: TextIO) -> asyncio.Future[str]:
    """Read one line of ``stream`` in a daemon thread.

    Not ``asyncio.to_thread``: a worker of the default executor that still waits for
    Enter after Ctrl-C would keep the interpreter from exiting.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def deliver(line: str | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(line or "")

    def work() -> None:
        try:
            line = stream.readline()
        except (OSError, ValueError) as exc:
            result: tuple[str | None, BaseException | None] = (None, exc)
        else:
            result = (line, None)
        with contextlib.suppress(RuntimeError):  # the event loop is gone already
            loop.call_soon_threadsafe(deliver, *result)

    threading.Thread(target=work, name="certsmith-manual-dns", daemon=True).start()
    return future


#: The manual provider reads no variables: the person at the terminal is its API.
ENV: tuple[EnvVar, ...] = ()


@dataclass(frozen=True)
class ManualConfig:
    """Settings of :class:`ManualProvider`: none yet but the solver's wait, kept for the recipe."""

    propagation_timeout: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Nothing to read (``ENV`` is empty)."""
        read_env(env, ENV, NAME)
        return cls()


class ManualProvider(ConfiguredProvider[ManualConfig]):
    """Asks the person at the terminal to create and delete the TXT records."""

    info: ClassVar[ProviderInfo] = ProviderInfo(
        name=NAME,
        title="Manual",
        description=("Prints each TXT record to create and waits for Enter; needs an interactive terminal."),
        env=ENV,
        example="certsmith issue --dns manual -d example.com -d '*.example.com'",
        default_propagation_timeout=600.0,
    )

    def __init__(
        self, config: ManualConfig | None = None, *, stdin: TextIO | None = None, output: TextIO | None = None
    ) -> None:
        """``stdin``/``output`` default to the process's stdin and stderr at call time."""
        self.config = config if config is not None else ManualConfig()
        self._stdin = stdin
        self._output = output
        import asyncio  # imported on use: `certsmith dns list` loads this module for its metadata only

        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """No variables (see :class:`ManualConfig`); refused at once without a terminal to ask at."""
        provider = cls(ManualConfig.from_env(env))
        provider.require_terminal("the TXT records")
        return provider

    def require_terminal(self, what: str) -> None:
        """Raise :class:`DnsError` unless stdin is an interactive terminal."""
        stdin = self.stdin
        if stdin is None or stdin.closed or not stdin.isatty():
            raise DnsError(
                f"the manual DNS provider needs an interactive terminal to confirm {what}; "
                "run certsmith in a terminal or choose a provider with an API (certsmith dns list)"
            )


    @property
    def stdin(self) -> TextIO | None:
        return self._stdin if self._stdin is not None else sys.stdin

    @property
    def output(self) -> TextIO:
        return self._output if self._output is not None else sys.stderr

    async def present(self, fqdn: str, value: str) -> None:
        """Show the record and wait until the user confirms it exists."""
        self.require_terminal(f"TXT {fqdn}")
        stdin = self.stdin
        assert stdin is not None
        async with self._lock:  # one prompt at a time
            self._say(
                "\nCreate this DNS record, then press Enter to continue:\n"
                f"  name:  {fqdn}\n  type:  TXT\n  value: {value}\n"
            )
            line = await _read_line(stdin)
        if not line:
            raise DnsError(f"stdin was closed before the TXT record {fqdn} was confirmed")

    async def cleanup(self, fqdn: str, value: str) -> None:
        """Tell the user which record may be deleted now."""
        self._say(f"You may now delete the DNS record: {fqdn} TXT {value}\n")

    async def aclose(self) -> None:
        """Nothing to release."""

    def _say(self, text: str) -> None:
        out = self.output
        out.write(text)
        out.flush()
