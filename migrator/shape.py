"""The options that shape the customers a run writes, stored with the state of --out-dir."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from migrator.config import SourceName
from migrator.mapping import MetadataMode


@dataclass(frozen=True)
class OutputShape:
    """The options that shape the customers a run writes.

    They are stored with the checkpoint (and kept once the run completes), so that a plain
    `migrator run` resumes, and `retry-failed` resends, in the shape already written; a run
    asking for another shape must say so (`--restart` or `--full`).
    """

    source: str = SourceName.profile_api.value
    metadata: str = MetadataMode.metadata.value
    identifier: str = "user_id"
    mapping: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "source": self.source,
            "metadata": self.metadata,
            "identifier": self.identifier,
            "mapping": self.mapping,
        }

    def differences(self, stored: Mapping[str, object]) -> list[str]:
        """What differs from `stored` (which may lack keys: older state files), readably."""
        found = []
        for key, value in self.as_dict().items():
            if key in stored and stored[key] != value:
                name = SHAPE_NAMES[key]
                found.append(f"{name} {_shown(value)} (stored: {_shown(stored[key])})")
        return found


#: How each stored option is set, for messages.
SHAPE_NAMES = {
    "source": "--source",
    "metadata": "--metadata",
    "identifier": "IDENTIFIER_SAVED_AS_SOURCE_ID",
    "mapping": "--mapping",
}


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


def stored_defaults(stored: Mapping[str, object] | None) -> dict[str, str]:
    """The stored options that come from variables, as the lowest layer of the environment:
    what a command uses when neither the environment nor `.env` sets them."""
    layer: dict[str, str] = {}
    if stored:
        if isinstance(stored.get("source"), str):
            layer["MIGRATOR_SOURCE"] = str(stored["source"])
        if isinstance(stored.get("identifier"), str):
            layer["IDENTIFIER_SAVED_AS_SOURCE_ID"] = str(stored["identifier"])
    return layer
