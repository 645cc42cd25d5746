"""The package's exception for a bad configuration value (imports no other diffcomp module).

Raised by the schema validation in ``diffcomp.config``, each study's semantic checks and the
parse-time build checks in ``diffcomp.checks``; ``diffcomp.config`` re-exports it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value breaks the schema or a semantic rule."""
