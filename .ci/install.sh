#!/usr/bin/env bash
# Installs the Debian packages the tests need (.ci/packages.txt) on a fresh
# machine of the project's kind. Its base image may already hold packages
# newer than the apt sources offer (today qemu-utils and qemu-block-extra from
# bookworm-backports); apt then refuses the archive's qemu-system-x86
# ("qemu-utils : Breaks: qemu-system-common (< 1:8.0…)"). When the plain
# install does not resolve, every installed package that no apt source offers
# at its installed version and that comes from the same source package as a
# wanted one is aligned (downgraded) to the archive's version; anything else
# that blocks the install fails with apt's reason and the package named.
# Usage: .ci/install.sh [PACKAGES.txt]   (as root)
set -euo pipefail
list=${1:-$(dirname "$0")/packages.txt}
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null

mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$list" | sort -u)
missing=()
for p in "${wanted[@]}"; do
    [[ -n $(apt-cache madison "$p" 2>/dev/null) ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "$0: not offered by the apt sources: ${missing[*]} (listed in $list; see /etc/apt/sources.list.d/)" >&2
    exit 1
fi

install=(apt-get install -y -q --no-install-recommends)
simulate() { "${install[@]}" -s --allow-downgrades "${wanted[@]}" "$@" >/tmp/ci-apt-sim.log 2>&1; }
align=()
if ! simulate; then
    # Source packages of what we want, and the installed packages of those
    # sources whose installed version no apt source offers ("local"), by source.
    declare -A wanted_source=() group=()
    for p in "${wanted[@]}"; do
        s=$(apt-cache show --no-all-versions "$p" | awk -F': ' '/^Source:/ && !done {sub(/ .*/, "", $2); print $2; done = 1}')
        wanted_source[${s:-$p}]=1
    done
    while read -r pkg; do
        src=$(dpkg-query -W -f='${source:Package}' "$pkg")
        [[ -n ${wanted_source[$src]:-} ]] || continue
        archive=$(apt-cache madison "$pkg" | awk -F' [|] ' 'NR == 1 {print $2}')
        [[ -n $archive ]] && group[$src]+=" $pkg=$archive"
    done < <(apt list --installed 2>/dev/null | awk -F/ '/\[installed,local\]/ {print $1}')
    # Align as little as possible: one source package's binaries at a time,
    # then all of them together.
    for src in "${!group[@]}" ALL; do
        if [[ $src == ALL ]]; then try=(${group[*]}); else try=(${group[$src]}); fi
        ((${#try[@]})) && simulate "${try[@]}" && { align=("${try[@]}"); break; }
    done
    if ((${#align[@]} == 0)); then
        echo "$0: apt cannot install the packages of $list, even with the installed packages of the same source packages aligned to the apt sources' versions:" >&2
        grep -E '^ |^E:' /tmp/ci-apt-sim.log >&2 || cat /tmp/ci-apt-sim.log >&2
        exit 1
    fi
    for a in "${align[@]}"; do
        echo "aligning ${a%%=*} $(dpkg-query -W -f='${Version}' "${a%%=*}") -> ${a#*=} (the version the apt sources offer)"
    done
fi
# (apt's resolver depends on the order of its arguments: keep the simulated one)
"${install[@]}" --allow-downgrades "${wanted[@]}" "${align[@]}"
# virt-fw-vars (tests/it/secure_boot.rs enrolls a key in OVMF's variables):
# PyPI's virt-firmware, pinned, for Debian's python3 (not a pyenv one first on
# PATH): its dependencies are the apt packages python3-cryptography/-pefile.
/usr/bin/python3 -m pip install -q --break-system-packages --no-deps virt-firmware==26.10
/usr/bin/python3 -c 'import virt.firmware.vars' || { echo "$0: virt-fw-vars cannot import its dependencies" >&2; exit 1; }
