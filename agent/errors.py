"""The agent's one exception root.

Every error the agent raises on purpose derives from `AgentError`, and its message is
one sentence a person can act on (the inotify instance limit, a bad config, another
agent already watching). The CLI prints it as it is and exits non-zero; anything else
that escapes is a bug, and says so.
"""

from __future__ import annotations


class AgentError(Exception):
    """An error the user can act on; its message says what and what to do."""


class CatalogBroken(AgentError):
    """The catalog became unusable while the agent was watching; it stopped."""
