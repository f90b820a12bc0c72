#!/usr/bin/env bash
# The peer benchmark: for each image kind (ext4, erofs, squashfs) of the Debian release pair
# from build-images.sh, in one run: diffota, casync, bita, zchunk, plain zstd -19 of v2 and
# xdelta3. Every network transfer goes through one nginx on 127.0.0.1 whose access log gives
# bytes and requests; times are medians of RUNS runs; peak RSS from /usr/bin/time. The
# pairwise peers (xdelta3 at its defaults and at -9 with LZMA, zstd --patch-from, HDiffPatch)
# and a whole zstd -19 image are rows of the same table: patch bytes, encode time as "make",
# decode time and the decoder's peak RSS as "install".
#
# Usage: bench/run.sh [KIND...]      (default: ext4 erofs squashfs; RUNS=3 by default)
# Needs: debootstrap erofs-utils squashfs-tools casync zchunk xdelta3 zstd nginx time (Debian),
# bita (cargo install bita), hdiffpatch (pip install hdiffpatch), root.
set -euo pipefail
cd "$(dirname "$0")"
bench=$PWD
root=$(cd .. && pwd)
runs=${RUNS:-3}
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(ext4 erofs squashfs)
python3 -c 'import hdiffpatch' 2>/dev/null || { echo "bench: the Python module hdiffpatch is missing (pip install hdiffpatch)" >&2; exit 1; }
for tool in casync zck zckdl xdelta3 zstd nginx bita /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (see the header of this script)" >&2; exit 1; }
done

"$bench/build-images.sh" >/dev/null
cargo build --release --quiet -p chunk-server -p diffota --manifest-path "$root/Cargo.toml"
cs=$root/target/release/chunk-server
dota=$root/target/release/diffota
cache=$bench/cache
work=$bench/cache/work
results=$bench/results
mkdir -p "$results"

# One nginx for every tool: static files, ranges (multi-range too, for zchunk), access log.
rm -rf "$work" && mkdir -p "$work/www" "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  log_format bench '\$request_method \$uri \$status \$bytes_sent "\$http_range"';
  access_log $work/access.log bench;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:18600; root $work/www; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null || true' EXIT
sleep 0.5
kill -0 "$nginx_pid" || { echo "bench: nginx did not start" >&2; cat "$work/nginx/error.log" >&2; exit 1; }
url=http://127.0.0.1:18600

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
traffic() { awk '{b += $4; n += 1} END {printf "%d %d\n", b, n}' "$work/access.log"; }
# timed CMD...: runs CMD, appends "seconds peak_rss_kib" to $work/timed
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
timed() { /usr/bin/time -f "%e %M" -a -o "$work/timed" "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; }
last_time() { tail -n 1 "$work/timed" | cut -d' ' -f1; }
last_rss() { tail -n 1 "$work/timed" | cut -d' ' -f2; }

for kind in "${kinds[@]}"; do
  v1=$cache/v1.$kind
  v2=$cache/v2.$kind
  v3=$cache/v3.$kind
  size=$(stat -c %s "$v2")
  declare -A bytes=() requests=() make_s=() install_s=() make_rss=() install_rss=()
  # The make of v2 that filled each diffota store (the rows installing from it report it).
  declare -A store_make_s=() store_make_rss=()
  : > "$work/timed"

  # diffota. Rows: a device that installed v1 through diffota (it stores v1's index, so it
  # fetches the index delta), a factory-flashed one (no stored index: it cuts its running
  # slot and fetches the whole index), and one two releases behind (v1 -> v3, stored index).
  # "make v2" is the default make (delta frames against v1); the plain make (--no-delta) of the same release, in a copy of the
  # store, gives the make-time ratio. Rows for --delta-level 12 (the fastest make) and 19
  # (the fewest bytes), and for --no-delta-siblings (one and two releases behind), too.
  rm -rf "$work/www/dota" "$work/www/dota12" "$work/www/dota19" "$work/www/dotanosib" "$work/www/dotamulti" "$work/plain"; key=$work/bench.key
  [ -f "$key" ] || "$cs" keygen --unencrypted --secret-key "$key" --public-key "$work/bench.pub" --force >/dev/null
  timed "$cs" make --store "$work/www/dota" --version 1 --compatible bench --key "$key" "$v1"
  cp -a "$work/www/dota" "$work/plain"
  cp -a "$work/www/dota" "$work/www/dota12"
  cp -a "$work/www/dota" "$work/www/dota19"
  cp -a "$work/www/dota" "$work/www/dotanosib"
  packs_bytes() { du -sb --apparent-size "$1/packs" | cut -f1; }
  v1_store_bytes=$(packs_bytes "$work/plain")
  timed "$cs" make --store "$work/plain" --version 2 --compatible bench --key "$key" --no-delta "$v2"
  plain_make_s=$(last_time); plain_make_rss=$(last_rss)
  plain_store_bytes=$(( $(packs_bytes "$work/plain") - v1_store_bytes ))
  rm -rf "$work/plain"
  # The default make: no delta flag (delta frames against the newest older release, v1).
  timed "$cs" make --store "$work/www/dota" --version 2 --compatible bench --key "$key" "$v2"
  store_make_s[dota]=$(last_time); store_make_rss[dota]=$(last_rss)
  delta_store_bytes=$(( $(packs_bytes "$work/www/dota") - v1_store_bytes ))
  # The same release with its delta frames at level 12 (the fastest make), a store of its own.
  timed "$cs" make --store "$work/www/dota12" --version 2 --compatible bench --key "$key" --delta-from 1 --delta-level 12 "$v2"
  store_make_s[dota12]=$(last_time); store_make_rss[dota12]=$(last_rss)
  timed "$cs" make --store "$work/www/dota19" --version 2 --compatible bench --key "$key" --delta-from 1 --delta-level 19 "$v2"
  store_make_s[dota19]=$(last_time); store_make_rss[dota19]=$(last_rss)
  timed "$cs" make --store "$work/www/dotanosib" --version 2 --compatible bench --key "$key" --delta-from 1 --no-delta-siblings "$v2"
  store_make_s[dotanosib]=$(last_time); store_make_rss[dotanosib]=$(last_rss)
  # v3 with delta frames against v2 and v1 both (a fleet with devices two releases behind).
  cp -a "$work/www/dota" "$work/www/dotamulti"
  multi_v3_before=$(packs_bytes "$work/www/dotamulti")
  timed "$cs" make --store "$work/www/dotamulti" --version 3 --compatible bench --key "$key" --delta-from 2 --delta-from 1 "$v3"
  store_make_s[dotamulti]=$(last_time); store_make_rss[dotamulti]=$(last_rss)
  multi_v3_store_bytes=$(( $(packs_bytes "$work/www/dotamulti") - multi_v3_before ))
  v3_before=$(packs_bytes "$work/www/dota")
  timed "$cs" make --store "$work/www/dota" --version 3 --compatible bench --key "$key" "$v3"
  v3_make_s=$(last_time)
  v3_store_bytes=$(( $(packs_bytes "$work/www/dota") - v3_before ))
  timed "$cs" make --store "$work/www/dotanosib" --version 3 --compatible bench --key "$key" --delta-from 2 --no-delta-siblings "$v3"
  "$cs" verify --public-key "$work/bench.pub" "$work/www/dota" >/dev/null
  mkdir -p "$work/dev/state"
  # device_config STORE: the device's configuration, fetching from store STORE.
  device_config() {
    cat > "$work/dev/diffota.toml" <<TOML
server_url = "$url/$1"
compatible = "bench"
public_keys = ["$work/bench.pub"]
state_dir = "$work/dev/state"
device_id = { value = "bench" }
[slots]
a = "$work/dev/a.img"
b = "$work/dev/b.img"
[boot]
cmdline = "$work/dev/cmdline"
TOML
  }
  echo "diffota.slot=a" > "$work/dev/cmdline"
  # dota_install ROW TO STORED [STORE]: v1 in slot a, install release TO from STORE (default
  # dota); STORED=yes leaves in the state directory what an install of v1 through diffota
  # leaves there (its index and signature as the running slot's seed).
  dota_install() {
    local row=$1 to=$2 stored=$3 store=${4:-dota} times=() image=$cache/v$2.$kind
    device_config "$store"
    "$cs" channel set --store "$work/www/$store" stable --release "$to" --key "$key" >/dev/null
    for _ in $(seq "$runs"); do
      rm -rf "$work/dev/state"/* ; cp "$v1" "$work/dev/a.img"; truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/a.img"
      rm -f "$work/dev/b.img"; truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/b.img"
      if [ "$stored" = yes ]; then
        cp "$work/www/$store/releases/1/rootfs.didx" "$work/dev/state/slot-a.didx"
        cp "$work/www/$store/releases/1/rootfs.didx.minisig" "$work/dev/state/slot-a.didx.minisig"
      fi
      : > "$work/access.log"; sync
      timed "$dota" --config "$work/dev/diffota.toml" install
      times+=("$(last_time)"); install_rss[$row]=$(last_rss)
      cmp -n "$(stat -c %s "$image")" "$work/dev/b.img" "$image"
    done
    install_s[$row]=$(printf '%s\n' "${times[@]}" | median)
    read -r "bytes[$row]" "requests[$row]" < <(traffic)
    make_s[$row]=${store_make_s[$store]}; make_rss[$row]=${store_make_rss[$store]}
  }
  dota_install diffota 2 yes
  dota_install "diffota, factory-flashed" 2 no
  dota_install "diffota, v1 -> v3" 3 yes
  dota_install "diffota, --delta-level 12" 2 yes dota12
  dota_install "diffota, --delta-level 19" 2 yes dota19
  dota_install "diffota, --no-delta-siblings" 2 yes dotanosib
  dota_install "diffota, --no-delta-siblings, v1 -> v3" 3 yes dotanosib
  dota_install "diffota, v3 against 2 and 1, v1 -> v3" 3 yes dotamulti

  # casync (64 KiB average chunks, its default, zstd)
  rm -rf "$work/www/casync"; mkdir -p "$work/www/casync"
  timed casync make --compression=zstd --store="$work/www/casync/store.castr" "$work/www/casync/v1.caibx" "$v1"
  timed casync make --compression=zstd --store="$work/www/casync/store.castr" "$work/www/casync/v2.caibx" "$v2"
  make_s[casync]=$(last_time); make_rss[casync]=$(last_rss)
  times=()
  for _ in $(seq "$runs"); do
    rm -f "$work/out.img"; : > "$work/access.log"
    timed casync extract --store="$url/casync/store.castr" --seed="$v1" "$url/casync/v2.caibx" "$work/out.img"
    times+=("$(last_time)"); install_rss[casync]=$(last_rss)
    cmp "$work/out.img" "$v2"
  done
  install_s[casync]=$(printf '%s\n' "${times[@]}" | median)
  read -r "bytes[casync]" "requests[casync]" < <(traffic)

  # bita (its defaults)
  rm -rf "$work/www/bita"; mkdir -p "$work/www/bita"
  timed bita compress -i "$v1" "$work/www/bita/v1.cba"
  timed bita compress -i "$v2" "$work/www/bita/v2.cba"
  make_s[bita]=$(last_time); make_rss[bita]=$(last_rss)
  times=()
  for _ in $(seq "$runs"); do
    rm -f "$work/out.img"; : > "$work/access.log"
    timed bita clone --seed "$v1" "$url/bita/v2.cba" "$work/out.img"
    times+=("$(last_time)"); install_rss[bita]=$(last_rss)
    cmp "$work/out.img" "$v2"
  done
  install_s[bita]=$(printf '%s\n' "${times[@]}" | median)
  read -r "bytes[bita]" "requests[bita]" < <(traffic)

  # zchunk (zckdl with the old release as the source)
  rm -rf "$work/www/zck"; mkdir -p "$work/www/zck"
  timed zck -o "$work/www/zck/v1.zck" "$v1"
  timed zck -o "$work/www/zck/v2.zck" "$v2"
  make_s[zchunk]=$(last_time); make_rss[zchunk]=$(last_rss)
  times=()
  for _ in $(seq "$runs"); do
    rm -f "$work/v2.zck"; : > "$work/access.log"
    (cd "$work" && timed zckdl -s "$work/www/zck/v1.zck" "$url/zck/v2.zck")
    times+=("$(last_time)"); install_rss[zchunk]=$(last_rss)
  done
  install_s[zchunk]=$(printf '%s\n' "${times[@]}" | median)
  read -r "bytes[zchunk]" "requests[zchunk]" < <(traffic)

  # Pairwise patches and a whole compressed image: one file per (v1, v2) pair, decoded
  # against the exact v1. patch NAME ENCODE... -- DECODE...: the encoder writes
  # $work/patch, the decoder $work/out.img; records bytes, encode time and decoder RSS.
  patch_rows=()
  pairwise() {
    local name=$1; shift
    local encode=() decode=()
    while [ "$1" != -- ]; do encode+=("$1"); shift; done; shift
    decode=("$@")
    rm -f "$work/patch" "$work/out.img"
    timed "${encode[@]}"; local encode_s; encode_s=$(last_time)
    timed "${decode[@]}"; local decode_s decode_rss; decode_s=$(last_time); decode_rss=$(last_rss)
    cmp "$work/out.img" "${pair_to:-$v2}"
    patch_rows+=("| $name | $(stat -c %s "$work/patch") | 1 | ${encode_s}s | ${decode_s}s | | $(mib "$decode_rss") MiB | | |")
    last_patch_bytes=$(stat -c %s "$work/patch")
  }
  declare -A patch_bytes=()
  pairwise "zstd -19 of v2" zstd -19 -T0 -q -f "$v2" -o "$work/patch" -- zstd -d -q -f "$work/patch" -o "$work/out.img"
  pairwise "xdelta3 -e -s (defaults)" xdelta3 -e -f -s "$v1" "$v2" "$work/patch" -- xdelta3 -d -f -s "$v1" "$work/patch" "$work/out.img"
  pairwise "xdelta3 -e -9 -S lzma -B image" xdelta3 -e -9 -S lzma -B "$size" -f -s "$v1" "$v2" "$work/patch" \
    -- xdelta3 -d -B "$size" -f -s "$v1" "$work/patch" "$work/out.img"
  patch_bytes[xdelta9]=$last_patch_bytes
  pairwise "zstd -19 --long=31 --patch-from" zstd -19 -T0 -q -f --long=31 --patch-from="$v1" "$v2" -o "$work/patch" \
    -- zstd -d -q -f --long=31 --patch-from="$v1" "$work/patch" -o "$work/out.img"
  pairwise "HDiffPatch (zstd 19)" "$bench/hdiff.py" diff "$v1" "$v2" "$work/patch" \
    -- "$bench/hdiff.py" apply "$v1" "$work/patch" "$work/out.img"
  patch_bytes[hdiff]=$last_patch_bytes
  # Two releases behind: HDiffPatch's patch for exactly v1 -> v3.
  pair_to=$v3
  pairwise "HDiffPatch (zstd 19), v1 -> v3" "$bench/hdiff.py" diff "$v1" "$v3" "$work/patch" \
    -- "$bench/hdiff.py" apply "$v1" "$work/patch" "$work/out.img"
  patch_bytes[hdiff13]=$last_patch_bytes
  unset pair_to

  {
    echo "### $kind (v2: $size bytes, $runs runs, $(date -u +%Y-%m-%d))"
    echo
    echo "| tool | downloaded | requests | make v2 | install (median) | make RSS | install RSS | bytes vs casync | bytes vs bita |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for tool in diffota "diffota, factory-flashed" "diffota, v1 -> v3" "diffota, --delta-level 12" "diffota, --delta-level 19" "diffota, --no-delta-siblings" "diffota, --no-delta-siblings, v1 -> v3" "diffota, v3 against 2 and 1, v1 -> v3" casync bita zchunk; do
      printf '| %s | %s | %s | %ss | %ss | %s MiB | %s MiB | %s | %s |\n' "$tool" "${bytes[$tool]}" "${requests[$tool]}" \
        "${make_s[$tool]}" "${install_s[$tool]}" "$(mib "${make_rss[$tool]}")" "$(mib "${install_rss[$tool]}")" \
        "$(awk -v a="${bytes[$tool]}" -v b="${bytes[casync]}" 'BEGIN {printf "%.2fx", a / b}')" \
        "$(awk -v a="${bytes[$tool]}" -v b="${bytes[bita]}" 'BEGIN {printf "%.2fx", a / b}')"
    done
    printf '%s\n' "${patch_rows[@]}"
    echo
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3fx", a / b}'; }
    echo "Against the goals (issue 17): one release behind, stored index: $(ratio "${bytes[diffota]}" "${patch_bytes[hdiff]}") HDiffPatch (goal <= 1.0x),"
    echo "$(ratio "${bytes[diffota]}" "${patch_bytes[xdelta9]}") xdelta3 -9 (goal <= 0.9x), ${requests[diffota]} requests (goal <= 10), install peak RSS"
    echo "$(mib "${install_rss[diffota]}") MiB (goal <= 16); factory-flashed $(ratio "${bytes[diffota, factory-flashed]}" "${patch_bytes[xdelta9]}") xdelta3 -9 (goal <= 1.0x);"
    echo "make (default: delta frames against v1) ${make_s[diffota]}s against a plain make (--no-delta) of v2 ${plain_make_s}s ($(ratio "${make_s[diffota]}" "$plain_make_s"), goal <= 3x), $(mib "$plain_make_rss") MiB plain;"
    echo "store bytes v2 added: $delta_store_bytes with delta frames, $plain_store_bytes plain ($(ratio "$delta_store_bytes" "$plain_store_bytes"));"
    echo "two releases behind (v1 -> v3): default make (v3 against v2) $(ratio "${bytes[diffota, v1 -> v3]}" "${patch_bytes[hdiff13]}") HDiffPatch v1 -> v3 in ${requests[diffota, v1 -> v3]} requests;"
    echo "v3 against 2 and 1: $(ratio "${bytes[diffota, v3 against 2 and 1, v1 -> v3]}" "${patch_bytes[hdiff13]}") HDiffPatch in ${requests[diffota, v3 against 2 and 1, v1 -> v3]} requests (goal <= 1.2x, <= 10 requests),"
    echo "make ${store_make_s[dotamulti]}s against ${v3_make_s}s, store bytes v3 added $multi_v3_store_bytes against $v3_store_bytes ($(ratio "$multi_v3_store_bytes" "$v3_store_bytes"));"
    for level in 12 19; do
      echo "with --delta-level $level: make $(ratio "${store_make_s[dota$level]}" "$plain_make_s") a plain make, download $(ratio "${bytes[diffota, --delta-level $level]}" "${patch_bytes[xdelta9]}") xdelta3 -9, $(ratio "${bytes[diffota, --delta-level $level]}" "${patch_bytes[hdiff]}") HDiffPatch."
    done
    echo
  } | tee "$results/$kind.md"
done
