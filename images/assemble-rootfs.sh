#!/usr/bin/env bash
# Assembles the root filesystem of one Sluice image in a directory:
#
#   images/assemble-rootfs.sh <binary> <rootfs-dir> [<sbom.cdx.json>]
#
#   /usr/local/bin/<binary>           the cargo-built binary (debug info stripped; the
#                                     cargo-auditable dependency list, if any, stays)
#   its shared libraries, as `ldd` lists them (glibc, libgcc_s), and the dynamic loader
#   /etc/passwd, /etc/group           root and nonroot (65532:65532), no login shell
#   /etc/nsswitch.conf                hosts: files dns (Kubernetes mounts /etc/hosts, /etc/resolv.conf)
#   /etc/ssl/certs/ca-certificates.crt  when the build host has it (for --sslrootcert)
#   /tmp (1777), /home/nonroot (owned by 65532 when run as root)
#   /usr/share/doc/sluice/<binary>.cdx.json   the SBOM, when given (CycloneDX; scanners
#                                     pick up *.cdx.json files in an image)
#   package metadata for the copied libraries, when the build host is Debian-based:
#   /var/lib/dpkg/status.d/<package>  the dpkg status entries of the packages that own
#                                     them (libc6, libgcc-s1, ca-certificates), the layout
#                                     distroless images use, and /etc/os-release,
#                                     /etc/debian_version — so image scanners (trivy, grype)
#                                     see glibc & co. with their Debian versions and match
#                                     them against Debian's security tracker
#
# No shell, no package manager. Used by images/Dockerfile (inside the rust:bookworm builder)
# and by scripts/build-images (on the host, daemonless), so both produce the same images.
set -euo pipefail

bin=${1:?usage: assemble-rootfs.sh <binary> <rootfs-dir> [<sbom.cdx.json>]}
root=${2:?usage: assemble-rootfs.sh <binary> <rootfs-dir> [<sbom.cdx.json>]}
sbom=${3:-}
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
libs=()
if ! ldd "$bin" >/dev/null 2>&1; then
    echo "assemble-rootfs: $bin is statically linked" >&2
else
    mapfile -t libs < <(ldd "$bin" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }' | sort -u)
    for lib in "${libs[@]}"; do
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

if [ -n "$sbom" ]; then
    install -D -m 0644 "$sbom" "$root/usr/share/doc/sluice/$name.cdx.json"
fi

# Debian package metadata for what was copied from the build host. Without it the libraries
# are anonymous files to a scanner, and a glibc CVE would go unreported.
if [ -f /etc/debian_version ] && command -v dpkg >/dev/null && command -v dpkg-query >/dev/null; then
    pkgs=()
    for lib in "${libs[@]}"; do
        # dpkg knows a file under the path its package installed it at: try the path ldd
        # printed, then the resolved one, then the other side of the merged /usr.
        owner=""
        for p in "$lib" "$(readlink -f "$lib")" "${lib#/usr}" "/usr$lib"; do
            owner=$(dpkg -S "$p" 2>/dev/null | head -1 | sed 's/: .*//; s/:[a-z0-9]*$//') && [ -n "$owner" ] && break
        done
        if [ -n "$owner" ]; then pkgs+=("$owner"); else echo "assemble-rootfs: no Debian package owns $lib" >&2; fi
    done
    if [ -f "$root/etc/ssl/certs/ca-certificates.crt" ] &&
        [ "$(dpkg-query -W -f='${db:Status-Status}' ca-certificates 2>/dev/null)" = installed ]; then
        pkgs+=(ca-certificates)
    fi
    if [ ${#pkgs[@]} -gt 0 ]; then
        mkdir -p "$root/var/lib/dpkg/status.d"
        for p in $(printf '%s\n' "${pkgs[@]}" | sort -u); do
            dpkg-query -s "$p" > "$root/var/lib/dpkg/status.d/$p"
            chmod 0644 "$root/var/lib/dpkg/status.d/$p"
        done
        cp /etc/debian_version "$root/etc/debian_version"
        cp -L /etc/os-release "$root/etc/os-release"
        chmod 0644 "$root/etc/debian_version" "$root/etc/os-release"
    fi
else
    echo "assemble-rootfs: the build host is not Debian-based: no package metadata for the copied libraries" >&2
fi
