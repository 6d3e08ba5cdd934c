"""Building a client image at a git ref, from the ref's tree only."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import naming
from .docker import COMPOSE_DIR, Engine
from .gitrepo import Mirror, Resolved

DEFAULT_DOCKERFILE = COMPOSE_DIR / "sum-site.Dockerfile"


@dataclass(frozen=True)
class ImageSpec:
    tag: str
    labels: dict

    @property
    def commit(self) -> str:
        return self.labels["sumbg.commit"]


def image_spec(slug: str, resolved: Resolved, sum_core: str | None) -> ImageSpec:
    return ImageSpec(
        tag=naming.image_tag(slug, resolved.ref),
        labels={
            "sumbg.slug": slug,
            "sumbg.ref": resolved.ref,
            "sumbg.commit": resolved.commit,
            "sumbg.sum-core": sum_core or "",
        },
    )


def build(engine: Engine, mirror: Mirror, spec: ImageSpec, *, python_image: str, ca_bundle: str,
          work_dir: Path) -> dict:
    """Build `spec` unless an image with that tag was already built from the same commit."""
    existing = engine.image_labels(spec.tag)
    if existing is not None and existing.get("sumbg.commit") == spec.commit:
        return {"outcome": "skipped", "reason": f"{spec.tag} already built from {spec.commit[:12]}"}
    work_dir.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="build-", dir=work_dir))
    try:
        mirror.export(spec.commit, context)
        extras = context / ".sumbg"
        extras.mkdir(exist_ok=True)
        (context / "vendor").mkdir(exist_ok=True)
        if ca_bundle:
            shutil.copyfile(ca_bundle, extras / "ca.crt")
        else:
            (extras / "ca.crt").write_bytes(b"")
        if (context / "Dockerfile").exists():
            dockerfile, source = context / "Dockerfile", "the repo's own Dockerfile"
        else:
            dockerfile, source = extras / "Dockerfile", "sumbg's default SUM Dockerfile"
            shutil.copyfile(DEFAULT_DOCKERFILE, dockerfile)
        engine.build(
            context, dockerfile, spec.tag, spec.labels,
            build_args={"PYTHON_IMAGE": python_image, "GIT_SHA": spec.commit,
                        "BUILD_ID": spec.labels["sumbg.ref"]},
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return {"image": spec.tag, "dockerfile": source}
