"""Put a tiny image straight into a real registry through its HTTP API (distribution spec v2), without an engine.

One layer (a gzip tar of one file), its config, an image manifest, and both kinds of index over it (an OCI
image index and a Docker manifest list, one platform each, as an engine with the containerd image store
pushes them). Used by the tests that read manifests back (tests/package/test_push.py) and that have a
real engine pull through a link reset mid-pull (tests/deploy/test_transfer.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from urllib.parse import urljoin

IMAGE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class UploadedImage:
    config: str  # the image id an engine reports after pulling it
    manifest: str
    manifest_bytes: bytes
    oci_index: str
    oci_index_bytes: bytes
    manifest_list: str
    config_size: int
    layer: tuple[str, int]


def upload_image(address: str, repository: str, text: str) -> UploadedImage:
    """Upload an image whose one file holds ``text`` to the plain-HTTP registry at ``address``."""
    import requests

    base = f"http://{address}/v2/{repository}"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(text.encode()), 1_700_000_000, 0o644
        archive.addfile(info, io.BytesIO(text.encode()))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello.txt"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha(tar.getvalue())]}}).encode()
    with requests.Session() as session:
        for blob in (layer, config):
            started = session.post(f"{base}/blobs/uploads/", timeout=30)
            started.raise_for_status()
            location = urljoin(f"http://{address}", started.headers["Location"])
            joiner = "&" if "?" in location else "?"
            session.put(f"{location}{joiner}digest={sha(blob)}", data=blob, timeout=30,
                        headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": IMAGE_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                       "digest": sha(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                        "digest": sha(layer)}],
        }).encode()
        indexes = {}
        for media_type in (OCI_INDEX, MANIFEST_LIST):
            indexes[media_type] = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
                {"mediaType": IMAGE_MANIFEST, "digest": sha(manifest), "size": len(manifest),
                 "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
        for data, media_type in ((manifest, IMAGE_MANIFEST), (indexes[OCI_INDEX], OCI_INDEX),
                                 (indexes[MANIFEST_LIST], MANIFEST_LIST)):
            session.put(f"{base}/manifests/{sha(data)}", data=data, timeout=30,
                        headers={"Content-Type": media_type}).raise_for_status()
    return UploadedImage(config=sha(config), manifest=sha(manifest), manifest_bytes=manifest,
                         oci_index=sha(indexes[OCI_INDEX]), oci_index_bytes=indexes[OCI_INDEX],
                         manifest_list=sha(indexes[MANIFEST_LIST]), config_size=len(config),
                         layer=(sha(layer), len(layer)))
