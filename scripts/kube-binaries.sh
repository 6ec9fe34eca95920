#!/usr/bin/env bash
# Provides the Kubernetes control-plane binaries Sluice's integration tests run
# (kube-apiserver, kube-controller-manager v1.20.2, and etcd), built once from Debian's
# `kubernetes` source package and cached outside the repository.
#
#   scripts/kube-binaries.sh          kube-apiserver, kube-controller-manager, etcd
#   scripts/kube-binaries.sh --all    also kube-scheduler, kubelet, kube-proxy
#
# The LAST line of stdout is the cache directory holding the binaries; everything else
# (progress, errors) goes to stderr. Typical use:
#
#   SLUICE_KUBE_BIN=$(scripts/kube-binaries.sh | tail -1)
#
# Cache directory: $SLUICE_KUBE_CACHE, default ~/.cache/sluice/kube-bin. When the
# binaries are there it returns at once. Otherwise (about 5 minutes on 2 cores, 2.6 GB
# of temporary disk) it:
#   1. installs the build dependencies with apt-get when running as root (golang-go jq
#      rsync make etcd-server golang-github-modern-go-reflect2-dev dpkg-dev), and adds a
#      bookworm `deb-src` entry (/etc/apt/sources.list.d/sluice-deb-src.sources) if
#      the source package cannot be found; as non-root it says what to install instead;
#   2. `apt-get source kubernetes=<version>` into a temporary directory;
#   3. replaces the vendored github.com/modern-go/reflect2 v1.0.1 (kube-apiserver
#      crashes with it under Go >= 1.18 on YAML and ?pretty=true responses) with
#      Debian's 1.0.2;
#   4. builds with the vendored modules only (no downloads), copies the binaries and
#      /usr/bin/etcd into a staging directory next to the cache, renames it into place
#      and removes the build tree.
# Concurrent runs are serialised with a lock file next to the cache directory.
set -euo pipefail

readonly KUBE_SRC_VERSION="${SLUICE_KUBE_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
readonly KUBE_GIT_VERSION_WANTED="v1.20.2"
readonly REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
readonly DEB_SRC_FILE=/etc/apt/sources.list.d/sluice-deb-src.sources
readonly BASE_KUBE=(kube-apiserver kube-controller-manager)
readonly EXTRA_KUBE=(kube-scheduler kubelet kube-proxy)
readonly APT_LOCK_OPT=(-o DPkg::Lock::Timeout=600)

say() { printf '\033[1m==> kube-binaries: %s\033[0m\n' "$*" >&2; }
die() { printf 'kube-binaries.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

all=0
for arg in "$@"; do
    case "$arg" in
        --all) all=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $arg" ;;
    esac
done

if [[ -n "${SLUICE_KUBE_CACHE:-}" ]]; then
    cache="$SLUICE_KUBE_CACHE"
else
    [[ -n "${HOME:-}" ]] || die "HOME is not set: set SLUICE_KUBE_CACHE to the cache directory to use"
    cache="$HOME/.cache/sluice/kube-bin"
fi
# Absolute, without a trailing slash (it is printed and renamed).
[[ "$cache" == /* ]] || cache="$PWD/$cache"
cache="${cache%/}"

wanted_kube=("${BASE_KUBE[@]}")
((all)) && wanted_kube+=("${EXTRA_KUBE[@]}")

# The kube binaries of `wanted_kube` missing from the cache (all of them when the cache
# was built from another source version).
missing_kube() {
    local stamp="" b
    [[ -r "$cache/VERSION" ]] && read -r stamp <"$cache/VERSION"
    for b in "${wanted_kube[@]}"; do
        if [[ "$stamp" != "kubernetes $KUBE_SRC_VERSION" || ! -x "$cache/$b" ]]; then
            printf '%s\n' "$b"
        fi
    done
}

cache_complete() {
    [[ -x "$cache/etcd" && -z "$(missing_kube)" ]]
}

# Fast path: nothing to do.
if cache_complete; then
    printf '%s\n' "$cache"
    exit 0
fi

mkdir -p "$(dirname "$cache")" || die "cannot create $(dirname "$cache")"
command -v flock >/dev/null || die "flock (util-linux) not found"
exec 9>"$cache.lock" || die "cannot open the lock file $cache.lock"
if ! flock -n 9; then
    say "another run is providing the binaries; waiting for it (lock $cache.lock)"
    flock 9
fi
if cache_complete; then
    printf '%s\n' "$cache"
    exit 0
fi

started=$SECONDS
is_root() { [[ $(id -u) == 0 ]]; }

# ---- prerequisites ---------------------------------------------------------------

# Missing packages, by the file each provides.
missing_pkgs=()
need() { # need <package> <file or command>
    if [[ "$2" == /* ]]; then [[ -e "$2" ]] || missing_pkgs+=("$1")
    else command -v "$2" >/dev/null || missing_pkgs+=("$1"); fi
}
need golang-go /usr/lib/go/bin/go
need jq jq
need rsync rsync
need make make
need etcd-server /usr/bin/etcd
need golang-github-modern-go-reflect2-dev "$REFLECT2_SRC/reflect2.go"
need dpkg-dev dpkg-source

# Whether apt knows the wanted version of the source package.
have_source() {
    apt-cache showsrc kubernetes 2>/dev/null | grep -qx "Version: $KUBE_SRC_VERSION"
}

# Writes deb-src stanzas mirroring the enabled bookworm `deb` entries (deb822 .sources
# files and one-line .list files); a stock bookworm entry if there are none.
write_deb_src() {
    local tmp f rest opts uri suite comps
    tmp=$(mktemp)
    {
        echo "# Written by sluice scripts/kube-binaries.sh: source packages for building"
        echo "# kube-apiserver and kube-controller-manager (apt-get source kubernetes)."
        echo
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -f "$f" && "$f" != "$DEB_SRC_FILE" ]] || continue
            awk 'BEGIN { RS = ""; ORS = "\n\n" }
                 /(^|\n)[Ee]nabled:[ \t]*no/ { next }
                 /(^|\n)Types:[^\n]*deb/ && /(^|\n)Suites:[^\n]*bookworm/ {
                     sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f "$f" ]] || continue
            sed -n 's/^[[:space:]]*deb[[:space:]]\+\(.*bookworm.*\)$/\1/p' "$f" |
                while read -r rest; do
                    # "[opts] URI suite comps..." -> a deb822 stanza.
                    opts=""
                    if [[ "$rest" == \[* ]]; then opts="${rest%%]*}"; rest="${rest#*] }"; fi
                    read -r uri suite comps <<<"$rest"
                    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n' "$uri" "$suite" "$comps"
                    if [[ "$opts" == *signed-by=* ]]; then
                        opts="${opts#*signed-by=}"
                        printf 'Signed-By: %s\n' "${opts%% *}"
                    fi
                    echo
                done
        done
    } >"$tmp"
    if ! grep -q '^Types: deb-src' "$tmp"; then
        cat >>"$tmp" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    install -m 0644 "$tmp" "$DEB_SRC_FILE"
    rm -f "$tmp"
}

if ((${#missing_pkgs[@]})) || ! have_source; then
    if ! is_root || ! command -v apt-get >/dev/null; then
        msg="cannot build the Kubernetes test binaries: prerequisites are missing and this is not root with apt-get."
        if ((${#missing_pkgs[@]})); then
            msg+=$'\n'"  install:  sudo apt-get install -y ${missing_pkgs[*]}"
        fi
        if ! have_source; then
            msg+=$'\n'"  make the source package kubernetes=$KUBE_SRC_VERSION available: add a"
            msg+=$'\n'"  Debian bookworm deb-src entry (e.g. $DEB_SRC_FILE with 'Types: deb-src',"
            msg+=$'\n'"  'URIs: http://deb.debian.org/debian', 'Suites: bookworm bookworm-updates',"
            msg+=$'\n'"  'Components: main'), then: sudo apt-get update"
        fi
        msg+=$'\n'"  or run this script once as root, or point SLUICE_KUBE_BIN at a directory holding"
        msg+=$'\n'"  kube-apiserver, kube-controller-manager and etcd."
        die "$msg"
    fi
    if ! have_source; then
        if [[ ! -f "$DEB_SRC_FILE" ]]; then
            say "adding a bookworm deb-src entry: $DEB_SRC_FILE"
            write_deb_src
        fi
        say "apt-get update"
        apt-get "${APT_LOCK_OPT[@]}" update -q >&2 || die "apt-get update failed"
        if ! have_source; then
            die "apt knows no source package kubernetes=$KUBE_SRC_VERSION (available: $(apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | tr '\n' ' ')). Check $DEB_SRC_FILE; this needs Debian bookworm sources. SLUICE_KUBE_SRC_VERSION overrides the version (untested)."
        fi
    fi
    if ((${#missing_pkgs[@]})); then
        say "installing ${missing_pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get "${APT_LOCK_OPT[@]}" install -y -q --no-install-recommends "${missing_pkgs[@]}" >&2 || {
            apt-get "${APT_LOCK_OPT[@]}" update -q >&2 || true
            DEBIAN_FRONTEND=noninteractive apt-get "${APT_LOCK_OPT[@]}" install -y -q --no-install-recommends "${missing_pkgs[@]}" >&2
        } || die "apt-get install ${missing_pkgs[*]} failed"
    fi
fi
[[ -x /usr/bin/etcd ]] || die "/usr/bin/etcd is missing (package etcd-server)"
[[ -f "$REFLECT2_SRC/reflect2.go" ]] || die "$REFLECT2_SRC is missing (package golang-github-modern-go-reflect2-dev)"

# ---- build -------------------------------------------------------------------------

build_root=""
staging=""
cleanup() {
    [[ -n "$build_root" && -d "$build_root" ]] && rm -rf "$build_root"
    [[ -n "$staging" && -d "$staging" ]] && rm -rf "$staging"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mapfile -t to_build < <(missing_kube)
if ((${#to_build[@]})); then
    build_root=$(mktemp -d "${TMPDIR:-/tmp}/sluice-kube-build.XXXXXX")
    avail_kb=$(df -Pk "$build_root" | awk 'NR == 2 { print $4 }')
    if [[ "$avail_kb" =~ ^[0-9]+$ ]] && ((avail_kb < 4 * 1024 * 1024)); then
        die "less than 4 GiB free in $(dirname "$build_root") (the build needs about 2.6 GB); set TMPDIR to a roomier place"
    fi

    say "fetching the source package kubernetes=$KUBE_SRC_VERSION into $build_root"
    (cd "$build_root" && apt-get source -q "kubernetes=$KUBE_SRC_VERSION" >&2) ||
        die "apt-get source kubernetes=$KUBE_SRC_VERSION failed"
    src=$(find "$build_root" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
    [[ -n "$src" && -f "$src/Makefile" ]] || die "the unpacked source tree was not found in $build_root"

    say "replacing vendor/github.com/modern-go/reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null || echo '?')"
    vend="$src/vendor/github.com/modern-go/reflect2"
    [[ -d "$vend" ]] || die "$vend not found in the source tree"
    rm -rf "$vend"
    mkdir -p "$vend"
    find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
        -exec cp -t "$vend" {} +
    [[ -f "$vend/reflect2.go" ]] || die "copying reflect2 into the vendor tree failed"

    targets=()
    for b in "${to_build[@]}"; do targets+=("cmd/$b"); done
    say "building ${to_build[*]} (Go: $(/usr/lib/go/bin/go version | awk '{print $3}'); a few minutes)"
    (
        cd "$src"
        export PATH="/usr/lib/go/bin:$PATH"
        export GOFLAGS=-mod=vendor GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
        export GOCACHE="$build_root/gocache" GOPATH="$build_root/gopath"
        # No .git in a source package: give the binaries their real version.
        export KUBE_GIT_VERSION="$KUBE_GIT_VERSION_WANTED" KUBE_GIT_TREE_STATE=clean
        make WHAT="${targets[*]}" >&2
    ) || die "building ${to_build[*]} failed (see the output above)"
    for b in "${to_build[@]}"; do
        [[ -x "$src/_output/bin/$b" ]] || die "the build produced no _output/bin/$b"
    done
fi

# ---- install into the cache --------------------------------------------------------

staging=$(mktemp -d "$(dirname "$cache")/.kube-bin.staging.XXXXXX")
# Keep what the cache already has from the same source version.
if [[ -d "$cache" ]] && [[ -r "$cache/VERSION" ]] && [[ "$(head -1 "$cache/VERSION")" == "kubernetes $KUBE_SRC_VERSION" ]]; then
    for b in "${BASE_KUBE[@]}" "${EXTRA_KUBE[@]}"; do
        if [[ -x "$cache/$b" ]]; then cp -p "$cache/$b" "$staging/$b"; fi
    done
fi
for b in "${to_build[@]}"; do
    cp -p "$src/_output/bin/$b" "$staging/$b"
done
cp -p /usr/bin/etcd "$staging/etcd"
if [[ -x /usr/bin/etcdctl ]]; then cp -p /usr/bin/etcdctl "$staging/etcdctl"; fi
{
    echo "kubernetes $KUBE_SRC_VERSION"
    echo "etcd $(dpkg-query -W -f='${Version}' etcd-server 2>/dev/null || echo unknown)"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/kube-binaries.sh"
} >"$staging/VERSION"
chmod 0755 "$staging"

# rename(2) into place; an old cache is moved aside first (readers that miss the cache
# in that instant wait on the lock and then find the new one).
if [[ -e "$cache" ]]; then
    old="$cache.old.$$"
    mv -T "$cache" "$old"
    mv -T "$staging" "$cache"
    rm -rf "$old"
else
    mv -T "$staging" "$cache"
fi
staging=""

if [[ -n "$build_root" ]]; then
    say "removing the build tree $build_root"
    rm -rf "$build_root"
    build_root=""
fi
cache_complete || die "the cache $cache is still incomplete after the build (this is a bug)"
say "done in $((SECONDS - started)) s: $(cd "$cache" && echo *)"
printf '%s\n' "$cache"
