#!/usr/bin/env bash
# Runs one fuzz target for a number of executions (default 10 million) with
# a 64 MiB allocation limit, seeded from fuzz/seeds/TARGET. Needs the pinned
# nightly and cargo-fuzz (see FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")"
target=$1
runs=${2:-10000000}
shift
[ $# -gt 0 ] && shift
mkdir -p "corpus/$target"
# The pinned nightly is written once, in connbal-ebpf/rust-toolchain.toml.
nightly=$(sed -n 's/^channel = "\(.*\)"$/\1/p' ../connbal-ebpf/rust-toolchain.toml)
exec cargo +"$nightly" fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -runs="$runs" -max_len=4096 -malloc_limit_mb=64 -rss_limit_mb=512 -timeout=10 -print_final_stats=1 "$@"
