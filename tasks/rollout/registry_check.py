"""Whether images exist in their registries, asked through a Docker engine.

The engine's distribution endpoint (`docker manifest inspect`'s question, the docker SDK's
`get_registry_data`) resolves a tag with the engine's own registry logins, so no registry
protocol or credential handling lives here.

    missing = missing_images(["registry.example/shop-api:v2"])   # [] when all exist
"""

from __future__ import annotations

from collections.abc import Sequence

from blocks.errors import SlipwayError
from blocks.text import one_line


def missing_images(images: Sequence[str], docker_host: str | None = None) -> list[str]:
    """The images (of `images`) no registry holds; raises `SlipwayError` in one line when
    the engine or a registry cannot be asked."""
    import docker
    from docker.errors import APIError, DockerException, NotFound

    try:
        client = (
            docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
            if docker_host
            else docker.from_env(timeout=60)
        )
    except DockerException as exc:
        raise SlipwayError(
            f"checking images needs a Docker engine ({one_line(str(exc), 120)}): set "
            "DOCKER_HOST, or check_images: false"
        ) from exc
    missing = []
    try:
        for image in dict.fromkeys(images):
            try:
                client.images.get_registry_data(image)
            except NotFound:
                missing.append(image)
            except APIError as exc:
                # Registries answer a missing tag as "manifest unknown"; the engine may pass
                # that on as a 500 rather than a 404.
                if "manifest unknown" in str(exc) or "not found" in str(exc).lower():
                    missing.append(image)
                    continue
                raise SlipwayError(
                    f"looking up image {image}: {one_line(str(exc.explanation or exc), 160)}: "
                    "check the registry and the engine's login to it (docker login)"
                ) from exc
    except DockerException as exc:
        raise SlipwayError(
            f"checking images: the Docker engine does not answer ({one_line(str(exc), 120)}): "
            "set DOCKER_HOST, or check_images: false"
        ) from exc
    finally:
        client.close()
    return missing
