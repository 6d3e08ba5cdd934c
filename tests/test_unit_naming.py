"""sumbg.naming: what a slug, domain and git ref may be, and the names derived from a slug."""

from __future__ import annotations

import pytest

from sumbg import naming
from sumbg.cli import exit_code_of
from sumbg.errors import UsageError

LABEL_63 = "a" * 63
# 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters.
DOMAIN_253 = ".".join([LABEL_63, LABEL_63, LABEL_63, "b" * 61])


# ---------------------------------------------------------------- slugs


@pytest.mark.parametrize("slug", ["acme", "a", "0", "acme-shop", "a1-b2", "9lives", "a" * 63, "acme-"])
def test_valid_slugs(slug):
    assert naming.validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug",
    ["", "Acme", "-acme", "acme_shop", "acme.shop", "acme shop", "a" * 64, "acme\n", "../etc", "acme/x", "ácme", None],
)
def test_invalid_slugs(slug):
    with pytest.raises(UsageError) as info:
        naming.validate_slug(slug)
    assert info.value.message == (
        f"invalid site slug {slug!r}: use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
    )
    assert exit_code_of(info.value) == 2


# ---------------------------------------------------------------- domains


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "acme.example.com",
        "www.acme-shop.example.co.uk",
        "localhost",
        "a",
        "a.b",
        "xn--bcher-kva.example",
        "123.example",
        "127.0.0.1",
        "a1-b2.example",
        LABEL_63 + ".com",
        DOMAIN_253,
    ],
)
def test_valid_domains(domain):
    assert naming.validate_domain(domain) == domain


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "evil.com {",
        "evil.com}",
        "{evil}.com",
        "evil.com {\n respond 200 }",
        "evil .com",
        "evil.com ",
        " evil.com",
        "evil.com\n",
        "evil.com\nrespond 200",
        "evil.com\r",
        "evil.com\t",
        "evil.com#x",
        "#evil.com",
        "*.example.com",
        "Example.com",
        "EXAMPLE.COM",
        "example.com.",
        ".example.com",
        "a..com",
        "-a.com",
        "a-.com",
        "a_b.com",
        "exam/ple.com",
        "example.com:8080",
        "http://example.com",
        "[::1]",
        'ex"ample.com',
        "exa'mple.com",
        "éxample.com",
        "a" * 64 + ".com",
        DOMAIN_253 + "b",
        DOMAIN_253 + ".c",
    ],
)
def test_invalid_domains(domain):
    with pytest.raises(UsageError) as info:
        naming.validate_domain(domain)
    assert info.value.message == (
        f"invalid domain {domain!r}: only a hostname (lowercase letters, digits, hyphens and dots) is allowed"
    )


@pytest.mark.parametrize("value", [None, 42, b"example.com"])
def test_non_string_domains_are_rejected(value):
    with pytest.raises(UsageError):
        naming.validate_domain(value)


def test_length_limits_are_exact():
    assert len(DOMAIN_253) == 253
    assert len(LABEL_63) == 63


# ---------------------------------------------------------------- git refs


@pytest.mark.parametrize(
    "ref", ["v1.0.0", "main", "HEAD", "release/1.2", "feature/x+y", "v0.7.0-rc.1", "a" * 200, "0123abcd", "user_branch"]
)
def test_valid_refs(ref):
    assert naming.validate_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "-x",
        "--upload-pack=evil",
        "a..b",
        "a//b",
        "/a",
        "a/",
        "x.lock",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a@{1}",
        "@",
        "a\\b",
        "a*",
        "a?",
        "a[b]",
        "v1\n",
        "a" * 201,
        "$(id)",
        "a;b",
        None,
    ],
)
def test_invalid_refs(ref):
    with pytest.raises(UsageError) as info:
        naming.validate_ref(ref)
    assert info.value.message == f"invalid git ref {ref!r}"
    assert exit_code_of(info.value) == 2


# ---------------------------------------------------------------- derived names


@pytest.mark.parametrize(
    "ref, tag",
    [
        ("v1.0.0", "sum-acme:v1.0.0"),
        ("release/1.2", "sum-acme:release-1.2"),
        ("feature/x+y", "sum-acme:feature-x-y"),
        ("my_branch", "sum-acme:my_branch"),
        ("0123abcdef", "sum-acme:0123abcdef"),
    ],
)
def test_image_tag(ref, tag):
    assert naming.image_tag("acme", ref) == tag


def test_image_tag_is_at_most_128_characters():
    assert naming.image_tag("acme", "r" * 200) == "sum-acme:" + "r" * 128


def test_names_derived_from_a_slug():
    slug = "acme-shop"
    assert naming.data_project(slug) == "sum-acme-shop-data"
    assert naming.app_project(slug, "blue") == "sum-acme-shop-blue"
    assert naming.app_project(slug, "green") == "sum-acme-shop-green"
    assert naming.site_network(slug) == "sum-acme-shop"
    assert naming.web_alias(slug, "blue") == "acme-shop-blue-web"
    assert naming.web_alias(slug, "green") == "acme-shop-green-web"
    assert naming.image_repository(slug) == "sum-acme-shop"
    assert naming.db_identifier(slug) == "acme_shop"


def test_colours():
    assert naming.COLOURS == ("blue", "green")
    assert naming.other_colour("blue") == "green"
    assert naming.other_colour("green") == "blue"


def test_breaking_migration_operations_are_flagged():
    from sumbg.ops.upgrade import breaking_operations

    plan = """Planned operations:
sum_core.0002_lead_phone
    Add field phone to lead
sum_core.0003_drop_fax
    Remove field fax from lead
    Rename field msg on lead to message
    Raw SQL operation -> UPDATE x"""
    assert breaking_operations(plan) == [
        "Remove field fax from lead",
        "Rename field msg on lead to message",
        "Raw SQL operation -> UPDATE x",
    ]
    assert breaking_operations("Planned operations:\n  No planned migration operations.") == []
