#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installing cargo-deb first if it is missing), lists
# its contents, and checks that every file the package promises is there with its mode, that the
# config is a conffile, and that the maintainer scripts create the user but neither enable nor
# start the units. Extra arguments go to `cargo deb` (e.g. --no-build after a release build).
#
#   packaging/build-deb.sh            # → target/debian/pvescale_<version>-1_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."

# A pinned version: a newer cargo-deb could want a newer Rust, or emit other maintainer
# scripts than the checks below expect.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (compiles for a few minutes)" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# cargo-deb prints the path of the package it wrote as its last line.
deb=$(cargo deb --locked "$@" | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not report a package file (got: $deb)" >&2
    exit 1
fi
echo "== $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
echo "== contents"
contents=$(dpkg-deb --contents "$deb")
echo "$contents"

status=0
expect() { # mode path
    if ! grep -Eq "^$1 (root/root|0/0) +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$contents"; then
        echo "build-deb: MISSING $1 /$2" >&2
        status=1
    fi
}
expect '-rwxr-xr-x' 'usr/bin/pvescale'
expect '-rw-r--r--' 'usr/lib/systemd/system/pvescale\.service'
expect '-rw-r--r--' 'usr/lib/systemd/system/pvescale\.timer'
expect '-rw-r--r--' 'usr/lib/sysusers\.d/pvescale\.conf'
expect '-rw-r--r--' 'usr/share/man/man1/pvescale\.1\.gz'
expect '-rw-r--r--' 'usr/share/man/man5/pvescale\.toml\.5\.gz'
expect '-rw-r--r--' 'usr/share/bash-completion/completions/pvescale'
expect '-rw-r--r--' 'usr/share/zsh/vendor-completions/_pvescale'
expect '-rw-r--r--' 'usr/share/fish/vendor_completions\.d/pvescale\.fish'
expect '-rw-r--r--' 'usr/share/doc/pvescale/examples/pvescale\.toml'
expect '-rw-r--r--' 'usr/share/doc/pvescale/examples/minimal\.toml'
expect '-rw-r--r--' 'usr/share/pvescale/grafana/pvescale\.json'
expect '-rw-r-----' 'etc/pvescale/pvescale\.toml'

echo "== conffiles"
conffiles=$(dpkg-deb --info "$deb" conffiles)
echo "$conffiles"
grep -qx '/etc/pvescale/pvescale.toml' <<<"$conffiles" || {
    echo "build-deb: /etc/pvescale/pvescale.toml is not a conffile" >&2
    status=1
}

for script in postinst postrm prerm; do
    text=$(dpkg-deb --info "$deb" "$script" 2>/dev/null) || continue
    if ! sh -n <<<"$text" || grep -q '#DEBHELPER#' <<<"$text"; then
        echo "build-deb: $script is not valid shell or still has the debhelper token" >&2
        status=1
    fi
done
postinst=$(dpkg-deb --info "$deb" postinst)
if [ "$(grep -c '^ *systemd-sysusers ' <<<"$postinst")" -ne 1 ]; then
    echo "build-deb: postinst does not create the pvescale user exactly once" >&2
    status=1
fi
grep -q 'dpkg-statoverride --update --add root pvescale 0640 /etc/pvescale/pvescale.toml' \
    <<<"$postinst" || {
    echo "build-deb: postinst does not restrict the config to root:pvescale 0640" >&2
    status=1
}
# cargo-deb's enable snippet ("was-enabled defaults to true") enables on first install, its
# start snippet starts: neither may be there. (Re-enabling on upgrade what the admin enabled,
# and try-restart of what runs, are fine.)
if grep -Eq 'was-enabled defaults to true|deb-systemd-invoke start' <<<"$postinst"; then
    echo "build-deb: postinst enables or starts a unit; it must not" >&2
    status=1
fi

if command -v systemd-analyze >/dev/null; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    dpkg-deb --extract "$deb" "$dir"
    echo "== systemd-analyze security (offline) of the packaged unit"
    (cd "$dir/usr/lib/systemd/system" &&
        systemd-analyze security --offline=yes --no-pager ./pvescale.service | tail -n 1)
fi

if [ "$status" -ne 0 ]; then
    echo "build-deb: FAILED" >&2
    exit 1
fi
echo "build-deb: ok: $deb"
