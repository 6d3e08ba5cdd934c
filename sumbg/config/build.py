"""`[build]`: how a client image is built, in sumbg.toml (every site) and site.toml (one site)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildSettings:
    """`[build]` of sumbg.toml or site.toml: how a client image is built (empty = not set here).

    The credential files are paths (mode 0600); sumbg never reads them into its records.
    """

    python_image: str = ""  # site only; "" = sumbg.toml images.python
    build_packages: tuple[str, ...] = ()  # site only; Debian packages of the build stage
    packages: tuple[str, ...] = ()  # site only; Debian packages of the final image
    lock: str = ""  # site only (sumbg.toml's is HostConfig.build_lock); "" = the host's
    git_token_file: str = ""  # token for git+https dependencies
    git_username: str = ""  # username sent with the token
    git_ssh_key_file: str = ""  # deploy key for git+ssh dependencies
    git_ssh_known_hosts: str = ""  # pinned host keys; "" = ~/.ssh/known_hosts, accept-new
    git_url_rewrites: tuple[tuple[str, str], ...] = ()  # (prefix, replacement): git's insteadOf
