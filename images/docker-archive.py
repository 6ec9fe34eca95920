#!/usr/bin/env python3
"""Writes a one-layer docker-archive (the `docker save` format, loadable with
`docker load`, `kind load image-archive`, `ctr -n k8s.io images import` and
`skopeo copy docker-archive:...`) from a root filesystem directory, without a daemon.

  images/docker-archive.py --rootfs DIR --tag sluice/worker:dev --entrypoint /usr/local/bin/sluice-worker \
      --port 9100 --out target/images/worker.tar

The layer is reproducible: sorted entries, mtime 0 (or $SOURCE_DATE_EPOCH), every file
owned by root except /home/nonroot (65532:65532); the image runs as User "65532".
"""
import argparse
import hashlib
import io
import json
import os
import stat
import tarfile
import time

p = argparse.ArgumentParser()
p.add_argument("--rootfs", required=True)
p.add_argument("--tag", required=True, action="append", help="repo:tag, repeatable")
p.add_argument("--entrypoint", required=True)
p.add_argument("--port", action="append", default=[])
p.add_argument("--label", action="append", default=[], help="key=value")
p.add_argument("--out", required=True)
a = p.parse_args()

mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
OWNED_BY_NONROOT = {"home/nonroot"}


def layer_bytes(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for n in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, n))
        for full in sorted(entries, key=lambda f: os.path.relpath(f, root)):
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            ti = tarfile.TarInfo(rel)
            ti.mtime = mtime
            ti.mode = stat.S_IMODE(st.st_mode)
            ti.uid = ti.gid = 65532 if rel in OWNED_BY_NONROOT else 0
            ti.uname = ti.gname = "nonroot" if rel in OWNED_BY_NONROOT else "root"
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif stat.S_ISLNK(st.st_mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(full)
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                ti.size = st.st_size
                with open(full, "rb") as f:
                    tar.addfile(ti, f)
            else:
                raise SystemExit(f"unsupported file type: {full}")
    return buf.getvalue()


layer = layer_bytes(a.rootfs)
diff_id = hashlib.sha256(layer).hexdigest()
created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
labels = dict(kv.split("=", 1) for kv in a.label)
config = {
    "architecture": "amd64",
    "os": "linux",
    "created": created,
    "config": {
        "User": "65532",
        "Entrypoint": [a.entrypoint],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/nonroot"],
        "WorkingDir": "/home/nonroot",
        "ExposedPorts": {f"{port}/tcp": {} for port in a.port},
        "Labels": labels,
    },
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    "history": [{"created": created, "created_by": "images/assemble-rootfs.sh + images/docker-archive.py"}],
}
config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
config_id = hashlib.sha256(config_bytes).hexdigest()
# Legacy layer id (directory name); any unique hex works, derive it from the diff id.
layer_id = hashlib.sha256(f"{diff_id}\n".encode()).hexdigest()

manifest = [{"Config": f"{config_id}.json", "RepoTags": a.tag, "Layers": [f"{layer_id}/layer.tar"]}]
repositories = {}
for t in a.tag:
    repo, _, tag = t.rpartition(":")
    repositories.setdefault(repo, {})[tag] = layer_id
layer_json = {"id": layer_id, "created": created, "config": config["config"], "os": "linux", "architecture": "amd64"}

os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
tmp = a.out + ".tmp"
with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
    def add(name, data, mode=0o644):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = mtime
        ti.mode = mode
        out.addfile(ti, io.BytesIO(data))

    d = tarfile.TarInfo(layer_id)
    d.type = tarfile.DIRTYPE
    d.mode = 0o755
    d.mtime = mtime
    out.addfile(d)
    add(f"{layer_id}/VERSION", b"1.0")
    add(f"{layer_id}/json", json.dumps(layer_json, sort_keys=True).encode())
    add(f"{layer_id}/layer.tar", layer)
    add(f"{config_id}.json", config_bytes)
    add("manifest.json", json.dumps(manifest).encode())
    add("repositories", json.dumps(repositories).encode())
os.replace(tmp, a.out)
print(f"{a.out}: {', '.join(a.tag)}  image id sha256:{config_id[:12]}  layer {len(layer) / 1e6:.1f} MB")
