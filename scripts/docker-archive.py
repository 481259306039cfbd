#!/usr/bin/env python3
"""docker-archive.py ROOT OUT REF ARCH EPOCH CONFIG_JSON CREATED_BY: write the folder ROOT as a
one-layer image in the docker-archive format (what `ctr images import`, `docker load` and
`podman load` accept), tagged REF, for architecture ARCH.

Reproducible: entries sorted, owner 0:0, every mtime EPOCH, modes fixed (0755 for folders and for
files with any execute bit, 0644 for other files, 1777 for /tmp), no timestamp in the JSON; the
same ROOT gives the same bytes. CONFIG_JSON holds the image config's User, Entrypoint and Cmd;
Env is Debian's default PATH and WorkingDir "/". CREATED_BY names the tool in the image history.
Used by scripts/build-image.sh and by the cluster tests' own small images (e2e/cluster/nodes.sh).
"""
import hashlib
import io
import json
import os
import stat
import sys
import tarfile


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__.split("\n\n")[0])
    root, out, ref, arch, epoch, config_json, created_by = sys.argv[1:]
    epoch = int(epoch)
    wanted = json.loads(config_json)

    def entry(name, kind, mode, size=0, linkname=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
        info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
        return info

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                paths.append(os.path.relpath(os.path.join(dirpath, n), root))
        for rel in sorted(paths):
            full = os.path.join(root, rel)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                tar.addfile(entry(rel, tarfile.SYMTYPE, 0o777, linkname=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                tar.addfile(entry(rel + "/", tarfile.DIRTYPE, 0o1777 if rel == "tmp" else 0o755))
            else:
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                with open(full, "rb") as f:
                    tar.addfile(entry(rel, tarfile.REGTYPE, mode, st.st_size), f)
    layer_bytes = layer.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()

    # The image config (OCI image spec / docker): no "created", so no timestamp.
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": wanted.get("User", ""),
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": wanted.get("Entrypoint"),
            "Cmd": wanted.get("Cmd"),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created_by": created_by}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{
        "Config": config_digest + ".json",
        "RepoTags": [ref],
        "Layers": [layer_digest + "/layer.tar"],
    }]
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()

    members = sorted([
        (layer_digest + "/layer.tar", layer_bytes),
        (config_digest + ".json", config_bytes),
        ("manifest.json", manifest_bytes),
    ])
    with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(entry(layer_digest + "/", tarfile.DIRTYPE, 0o755))
        for name, data in members:
            tar.addfile(entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    print(f"{ref} sha256:{config_digest} ({len(layer_bytes)} bytes unpacked)")


if __name__ == "__main__":
    main()
