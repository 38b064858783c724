"""What issue, renew and sync did: the frozen result records, pure data with their JSON form.

:mod:`certsmith.manager` re-exports them; the CLI and the library print or return them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from certsmith.deploy.runner import TargetResult


@dataclass(frozen=True)
class IssueResult:
    """What ``issue`` did for one lineage: ``issued`` is false when a valid certificate was kept."""

    name: str
    location: str
    names: tuple[str, ...]
    not_after: str
    issuer: str
    serial: str
    issued: bool = True
    reason: str = ""
    deploy_error: str | None = None  # the failed deploy targets' and the deploy hook's errors, in one line
    deployed: tuple[TargetResult, ...] = ()

    @property
    def directory(self) -> Path:
        """The lineage's directory, for the file store."""
        return Path(self.location)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = self.location
        data["names"] = list(self.names)
        del data["deployed"]
        data["deploy"] = [target.to_json() for target in self.deployed]
        return data


@dataclass(frozen=True)
class RenewOutcome:
    """What ``renew`` did for one lineage."""

    name: str
    renewed: bool
    reason: str
    error: str | None = None
    result: IssueResult | None = None
    #: Why the rate limiter deferred this renewal (not a failure: the next run retries), and when it may.
    deferred: str | None = None
    retry_at: str = ""
    #: What failed, for a caller that turns it into advice (the CLI); not part of the JSON.
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "renewed": self.renewed, "reason": self.reason}
        if self.error is not None:
            data["error"] = self.error
        if self.deferred is not None:
            data["deferred"] = self.deferred
            data["retry_at"] = self.retry_at
        if self.result is not None:
            data.update(self.result.to_json())
        return data


@dataclass(frozen=True)
class SyncOutcome:
    """What ``sync`` did for one lineage on this host: ``delivered`` when its targets ran and all succeeded."""

    name: str
    version: int
    serial: str
    delivered: bool
    reason: str
    error: str | None = None
    deployed: tuple[TargetResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "version": self.version, "serial": self.serial,
                                "delivered": self.delivered, "reason": self.reason,
                                "deploy": [target.to_json() for target in self.deployed]}
        if self.error is not None:
            data["error"] = self.error
        return data
