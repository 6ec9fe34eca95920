#!/usr/bin/env bash
# Assembles the root filesystem of one Sluice image in a directory:
#
#   images/assemble-rootfs.sh <binary> <rootfs-dir>
#
#   /usr/local/bin/<binary>           the cargo-built binary (debug info stripped)
#   its shared libraries, as `ldd` lists them (glibc, libgcc_s), and the dynamic loader
#   /etc/passwd, /etc/group           root and nonroot (65532:65532), no login shell
#   /etc/nsswitch.conf                hosts: files dns (Kubernetes mounts /etc/hosts, /etc/resolv.conf)
#   /etc/ssl/certs/ca-certificates.crt  when the build host has it (for --sslrootcert)
#   /tmp (1777), /home/nonroot (owned by 65532 when run as root)
#
# No shell, no package manager. Used by images/Dockerfile (inside the rust:bookworm builder)
# and by scripts/build-images (on the host, daemonless), so both produce the same images.
set -euo pipefail

bin=${1:?usage: assemble-rootfs.sh <binary> <rootfs-dir>}
root=${2:?usage: assemble-rootfs.sh <binary> <rootfs-dir>}
name=$(basename "$bin")

rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/local/bin/$name"
# Release builds keep line tables for backtraces (Cargo.toml); the image keeps symbols only.
if command -v strip >/dev/null; then
    strip --strip-debug "$root/usr/local/bin/$name"
fi

# Shared libraries and the loader, at the paths the binary asks for.
if ! ldd "$bin" >/dev/null 2>&1; then
    echo "assemble-rootfs: $bin is statically linked" >&2
else
    ldd "$bin" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        # Follow symlinks (ld-linux-x86-64.so.2 -> ...): copy the file under the name asked for.
        cp -L "$lib" "$root$lib"
        chmod 0755 "$root$lib"
    done
    # /lib64/ld-linux-x86-64.so.2 is the loader path in the ELF header; on merged-/usr systems
    # /lib64 and /lib are symlinks to usr/, which a one-layer image need not reproduce.
fi

cat > "$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PW
cat > "$root/etc/group" <<'GR'
root:x:0:
nonroot:x:65532:
GR
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
chmod 0644 "$root"/etc/passwd "$root"/etc/group "$root"/etc/nsswitch.conf
if [ "$(id -u)" = 0 ]; then
    chown 65532:65532 "$root/home/nonroot"
fi
