"""Container image references and release versions: parsing, validation and the patch that
sets an image, as `kubectl set image` does. Pure functions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from playbook.errors import InvalidInputError
from playbook.rollout import CHANGE_CAUSE_ANNOTATION, Json

_VERSION = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageRef:
    """A container image reference split into repository, tag and digest."""

    repository: str
    tag: str | None
    digest: str | None

    def with_tag(self, tag: str) -> str:
        """This repository at another tag (any digest dropped)."""
        return f"{self.repository}:{tag}"


def parse_image(image: str) -> ImageRef:
    """Split `registry[:port]/path[:tag][@digest]`; malformed input raises InvalidInputError."""
    if not image or any(ch.isspace() for ch in image):
        raise InvalidInputError(f"malformed image reference {image!r}")
    rest, _, digest = image.partition("@")
    last_slash = rest.rfind("/")
    tag: str | None = None
    if ":" in rest[last_slash + 1 :]:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise InvalidInputError(f"malformed image tag {tag!r} in {image!r}")
    if not rest:
        raise InvalidInputError(f"malformed image reference {image!r}")
    return ImageRef(repository=rest, tag=tag, digest=digest or None)


def validate_version(version: str) -> str:
    """Return `version` if it is a release tag such as `v1.2.3` or `v1.2.3-rc.1`.

    Raises:
        InvalidInputError: it is not `[v]MAJOR.MINOR.PATCH[-PRERELEASE]`.
    """
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidInputError(
            f"malformed version {version!r}: expected a release tag like v1.2.3 or v1.2.3-rc.1"
        )
    return version


def version_of(image: str) -> str | None:
    """The tag of an image reference (its version), or None when it has none."""
    return parse_image(image).tag


def set_image_patch(container: str, image: str, change_cause: str | None = None) -> Json:
    """A strategic-merge patch doing `kubectl set image deployment/x container=image`."""
    patch: Json = {
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}
    }
    if change_cause:
        patch["metadata"] = {"annotations": {CHANGE_CAUSE_ANNOTATION: change_cause}}
    return patch
