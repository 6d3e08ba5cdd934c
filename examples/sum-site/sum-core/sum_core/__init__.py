"""sum-core: the shared Django app every SUM client site installs."""

# Rewritten by examples/sum-site/build_repo.py for each release.
__version__ = "0.0.0.dev0"
