#!/usr/bin/env python3
"""Write a ``docker load`` tarball of a root file system with the architecture in its image config.

``docker import --platform`` is ignored by a non-experimental engine (the image then says the engine's
own architecture), so an arm64 base made on an x86-64 workstation is written as an image by hand: one
layer (the root file system as a tar), a config naming ``architecture``/``os`` and the layer's diff id,
and the ``manifest.json`` that ``docker load`` reads.

Usage: scripts/rootfs_image.py ROOTFS TAG ARCH [--env K=V ...] [--label K=V ...] [--cmd JSON] > image.tar
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path


def layer_tar(rootfs: Path, out: Path) -> str:
    """Tar ``rootfs`` (numeric owners, as found) into ``out``; its sha256 (the layer's diff id)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(rootfs.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("tag")
    parser.add_argument("arch", choices=["arm64", "amd64"])
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--label", action="append", default=[], help="K=V, an image label (Config.Labels)")
    parser.add_argument("--cmd", default='["python3"]')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rootfs-image-") as tmp:
        layer = Path(tmp) / "layer.tar"
        diff_id = layer_tar(args.rootfs, layer)
        created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        config = {
            "architecture": args.arch, "os": "linux", "created": created,
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *args.env],
                       "Cmd": json.loads(args.cmd),
                       "Labels": dict(label.split("=", 1) for label in args.label)},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": created, "created_by": "debootstrap + scripts/rootfs_image.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [args.tag], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as out:
            for name, data in ((config_name, config_bytes), ("manifest.json", manifest)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{diff_id}/layer.tar")
            info.size = layer.stat().st_size
            with open(layer, "rb") as f:
                out.addfile(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
