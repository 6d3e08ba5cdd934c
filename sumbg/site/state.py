"""What state.json records about a site."""

from __future__ import annotations

from sumbg.adapters import build
from sumbg.util import utc_now


def colour_version(record: dict) -> dict:
    """What /health/ reports for a recorded release (sumbg sets GIT_SHA and BUILD_ID)."""
    return {"build": record.get("ref"), "git_sha": record.get("commit")}


def colour_record(image: build.ImageSpec, **extra) -> dict:
    return {
        "image": image.tag,
        "ref": image.labels["sumbg.ref"],
        "commit": image.commit,
        "sum_core": image.labels["sumbg.sum-core"] or None,
        "deployed_at": utc_now(),
        **extra,
    }


def expected_version(image: build.ImageSpec) -> dict:
    return colour_version(colour_record(image))
