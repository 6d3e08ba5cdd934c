"""Names of everything sumbg creates, derived from the slug (a contract)."""

from __future__ import annotations

import re

from sumbg.errors import UsageError

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# A hostname: dot-separated labels of letters, digits and inner hyphens. Nothing
# else may reach the Caddy config, so no brace, space or newline can inject a directive.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_PATTERN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# Git ref names as git check-ref-format allows them, minus anything shell- or tag-hostile.
REF_PATTERN = re.compile(r"^(?!.*\.\.)(?!.*//)(?!/)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/+-]{1,200}$")

COLOURS = ("blue", "green")
# The stand-in for a colour while an upgrade rehearses its migrations: the live release,
# pointed at a migrated copy of the database, as `sum-<slug>-rehearsal` / `<slug>-rehearsal-web`.
REHEARSAL = "rehearsal"


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.fullmatch(slug or ""):
        raise UsageError(
            f"invalid site slug {slug!r}: use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
        )
    return slug


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or not DOMAIN_PATTERN.fullmatch(domain):
        raise UsageError(
            f"invalid domain {domain!r}: only a hostname (lowercase letters, digits, hyphens and dots) is allowed"
        )
    return domain


def validate_ref(ref: str) -> str:
    if not REF_PATTERN.fullmatch(ref or "") or ref.startswith("-"):
        raise UsageError(f"invalid git ref {ref!r}")
    return ref


def other_colour(colour: str) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def data_project(slug: str) -> str:
    return f"sum-{slug}-data"


def app_project(slug: str, colour: str) -> str:
    return f"sum-{slug}-{colour}"


def site_network(slug: str) -> str:
    return f"sum-{slug}"


def site_edge_network(slug: str) -> str:
    """The site's link to the edge: its webs and the edge Caddy, no other site. A dot, which no slug
    holds, so it can never be another site's network (`sum-acme-edge` is site acme-edge's)."""
    return f"sum-{slug}.edge"


# Labels on the networks of sumbg's address plan (sumbg.site.addresses): whose they are, and, on a
# site's edge link, which edge joins it and at which address (the one the site's gunicorn trusts).
NETWORK_ROOT_LABEL = "sumbg.root"
NETWORK_SITE_LABEL = "sumbg.site"
EDGE_LINK_LABEL = "sumbg.edge-link"
EDGE_ADDRESS_LABEL = "sumbg.edge-address"


def web_alias(slug: str, colour: str) -> str:
    return f"{slug}-{colour}-web"


def image_repository(slug: str) -> str:
    return f"sum-{slug}"


def image_tag(slug: str, ref: str) -> str:
    # Docker tags allow [A-Za-z0-9_.-]; refs like release/1.2 become release-1.2.
    safe_ref = re.sub(r"[^A-Za-z0-9_.-]", "-", ref)[:128]
    return f"{image_repository(slug)}:{safe_ref}"


def db_identifier(slug: str) -> str:
    """The Postgres database and role name for a site."""
    return slug.replace("-", "_")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise UsageError(f"--env {name!r}: a variable name is letters, digits and underscores")
    return name


# Host name of the edge's metrics endpoint on its loopback-only preview listener
# (.invalid can never be a real site's domain).
METRICS_HOST = "sumbg-metrics.invalid"
