#!/usr/bin/env bash
# The peer benchmark: for each image kind (ext4, erofs, squashfs; arm64-ext4, arm64-erofs,
# arm64-squashfs for the arm64 releases) of the Debian releases from build-images.sh, in one
# run: diffota, casync, bita, zchunk, plain zstd -19 of v2 and
# xdelta3. Every network transfer goes through one nginx on 127.0.0.1 whose access log gives
# bytes and requests; times are medians of RUNS runs; peak RSS from /usr/bin/time. The
# pairwise peers (xdelta3 at its defaults and at -9 with LZMA, zstd --patch-from, HDiffPatch)
# and a whole zstd -19 image are rows of the same table: patch bytes, encode time as "make",
# decode time and the decoder's peak RSS as "install".
#
# Usage: bench/run.sh [KIND...]      (default: ext4 erofs arm64-ext4; RUNS=3 by default)
# Needs: debootstrap erofs-utils squashfs-tools casync zchunk xdelta3 zstd nginx time (Debian),
# bita (cargo install bita), hdiffpatch (pip install hdiffpatch), root.
set -euo pipefail
cd "$(dirname "$0")"
bench=$PWD
root=$(cd .. && pwd)
runs=${RUNS:-3}
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(ext4 erofs arm64-ext4)
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
  # image_of N: release N's image of this kind.
  # Release 5, where there is one, is the major upgrade (Debian's next release).
  case $kind in
    arm64-*) image_of() { echo "$cache/arm64-v$1.${kind#arm64-}"; } ;;
    *) image_of() { if [ "$1" = 5 ]; then echo "$cache/major.$kind"; else echo "$cache/v$1.$kind"; fi; } ;;
  esac
  major=$(image_of 5); [ -f "$major" ] || major=
  v1=$(image_of 1)
  v2=$(image_of 2)
  v3=$(image_of 3)
  v4=$(image_of 4)
  for image in "$v1" "$v2" "$v3" "$v4"; do
    [ -f "$image" ] || { echo "bench: $image is missing (bench/build-images.sh builds it)" >&2; exit 1; }
  done
  size=$(stat -c %s "$v2")
  declare -A bytes=() requests=() make_s=() install_s=() make_rss=() install_rss=()
  # The make of v2 that filled each diffota store (the rows installing from it report it).
  declare -A store_make_s=() store_make_rss=()
  : > "$work/timed"

  # diffota. Stores, each a directory of the one nginx:
  # - dota: v1, then v2, v3 and v4 each made by default (delta frames against the three
  #   newest older releases, no channel set: v3 against 2 and 1, v4 against 3, 2 and 1).
  #   Rows: a device that installed v1 through diffota (it stores v1's index, so it fetches
  #   the index delta), a factory-flashed one (no stored index: it cuts its running slot and
  #   fetches the whole index), a factory-flashed one provisioned as the factory flow does
  #   (`diffota provision` with the release's signed index, which the layer's factory data
  #   carries), devices on v1 two and three releases behind (v1 -> v3, v1 -> v4) and one on
  #   v2 two behind v4 (v2 -> v4).
  # - depth2 (directory "fleet"): dota's v1 and v2, then v3 and v4 made with --delta-depth 2
  #   (the default before: v4 against 3 and 2 only). Row: v1 -> v4, a device three behind
  #   with no frames against its release; the makes give the time and store bytes a third
  #   base costs.
  # - dota12, dota19: v2 with its delta frames at --delta-level 12 (the fastest make) and 19
  #   (the fewest bytes).
  # - plain: v2, v3 and v4 made with --no-delta, for make's time ratio and the bytes each
  #   release adds to the store.
  rm -rf "$work/www/dota" "$work/www/dota12" "$work/www/dota19" "$work/www/fleet" "$work/www/major" "$work/www/majorif" "$work/www/dotaif" "$work/plain"; key=$work/bench.key
  [ -f "$key" ] || "$cs" keygen --unencrypted --secret-key "$key" --public-key "$work/bench.pub" --force >/dev/null
  timed "$cs" make --store "$work/www/dota" --version 1 --compatible bench --key "$key" "$v1"
  cp -a "$work/www/dota" "$work/plain"
  cp -a "$work/www/dota" "$work/www/dota12"
  cp -a "$work/www/dota" "$work/www/dota19"
  cp -a "$work/www/dota" "$work/www/dotaif"
  packs_bytes() { du -sb --apparent-size "$1/packs" | cut -f1; }
  v1_store_bytes=$(packs_bytes "$work/www/dota")
  declare -A plain_store_bytes=() dota_store_bytes=() fleet_store_bytes=() fleet_make_s=() dota_make_s=() plain_version_make_s=()
  # make_counted STORE NAME VERSION [FLAG...]: makes VERSION in STORE and counts the bytes it
  # added to STORE in NAME_store_bytes[VERSION].
  make_counted() {
    local store=$1 name=$2 version=$3; shift 3
    local before; before=$(packs_bytes "$store")
    timed "$cs" make --store "$store" --version "$version" --compatible bench --key "$key" "$@" "$(image_of "$version")"
    local -n added=${name}_store_bytes
    added[$version]=$(( $(packs_bytes "$store") - before ))
  }
  for version in 2 3 4; do
    make_counted "$work/plain" plain "$version" --no-delta; plain_version_make_s[$version]=$(last_time)
    [ "$version" = 2 ] && { plain_make_s=$(last_time); plain_make_rss=$(last_rss); }
  done
  rm -rf "$work/plain"
  # The default make: no delta flag (delta frames against the older releases, here v1).
  make_counted "$work/www/dota" dota 2
  store_make_s[dota]=$(last_time); store_make_rss[dota]=$(last_rss)
  timed "$cs" make --store "$work/www/dota12" --version 2 --compatible bench --key "$key" --delta-from 1 --delta-level 12 "$v2"
  store_make_s[dota12]=$(last_time); store_make_rss[dota12]=$(last_rss)
  timed "$cs" make --store "$work/www/dota19" --version 2 --compatible bench --key "$key" --delta-from 1 --delta-level 19 "$v2"
  store_make_s[dota19]=$(last_time); store_make_rss[dota19]=$(last_rss)
  timed "$cs" make --store "$work/www/dotaif" --version 2 --compatible bench --key "$key" --image-frames "$v2"
  store_make_s[dotaif]=$(last_time); store_make_rss[dotaif]=$(last_rss)
  dotaif_store_bytes=$(( $(packs_bytes "$work/www/dotaif") - v1_store_bytes ))
  rm -rf "$work/www/major" "$work/www/majorif"
  if [ -n "$major" ]; then
    cp -a "$work/www/dota" "$work/www/major"
    cp -a "$work/www/dota" "$work/www/majorif"
  fi
  # v3 has two older releases, so --delta-depth 2 makes it as the default does.
  make_counted "$work/www/dota" dota 3; dota_make_s[3]=$(last_time)
  cp -a "$work/www/dota" "$work/www/fleet"
  make_counted "$work/www/dota" dota 4; dota_make_s[4]=$(last_time)
  make_counted "$work/www/fleet" fleet 4 --delta-depth 2; fleet_make_s[4]=$(last_time)
  store_make_s[fleet]=${fleet_make_s[4]}; store_make_rss[fleet]=$(last_rss)
  "$cs" verify --public-key "$work/bench.pub" "$work/www/dota" >/dev/null
  "$cs" verify --public-key "$work/bench.pub" "$work/www/fleet" >/dev/null
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
  # dota_install ROW TO STORED [STORE] [FROM]: release FROM (default 1; "wiped": zeros) in
  # slot a, install release TO from STORE (default dota); STORED=yes leaves in the state directory what an
  # install of FROM through diffota leaves there (its index and signature as the running
  # slot's seed), STORED=provisioned runs `diffota provision` with FROM's signed index first.
  dota_install() {
    local row=$1 to=$2 stored=$3 store=${4:-dota} from=${5:-1} times=() image
    image=$(image_of "$to")
    device_config "$store"
    "$cs" channel set --store "$work/www/$store" stable --release "$to" --key "$key" >/dev/null
    for _ in $(seq "$runs"); do
      rm -rf "$work/dev/state"/* ; rm -f "$work/dev/a.img"
      [ "$from" = wiped ] || cp "$(image_of "$from")" "$work/dev/a.img"
      truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/a.img"
      rm -f "$work/dev/b.img"; truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/b.img"
      if [ "$stored" = yes ]; then
        cp "$work/www/$store/releases/$from/rootfs.didx" "$work/dev/state/slot-a.didx"
        cp "$work/www/$store/releases/$from/rootfs.didx.minisig" "$work/dev/state/slot-a.didx.minisig"
      elif [ "$stored" = provisioned ]; then
        # The documented factory flow: the factory data carries the release's signed index
        # and `provision` records it on the first boot (checking the slot byte for byte).
        cp "$work/www/$store/releases/$from/rootfs.didx" "$work/www/$store/releases/$from/rootfs.didx.minisig" "$work/dev/"
        "$dota" --config "$work/dev/diffota.toml" provision "$work/dev/rootfs.didx" >/dev/null
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
  dota_install "diffota, factory-flashed, provisioned" 2 provisioned
  dota_install "diffota, --delta-level 12" 2 yes dota12
  dota_install "diffota, --delta-level 19" 2 yes dota19
  dota_install "diffota, v1 -> v3" 3 yes
  dota_install "diffota, v1 -> v4" 4 yes
  dota_install "diffota, v2 -> v4" 4 yes dota 2
  dota_install "diffota, --delta-depth 2, v1 -> v4" 4 yes fleet
  # The install's I/O floor, on the same files as the one-behind row: read the seed (slot a,
  # v1, buffered), write the slot (v2's bytes, fsync), read the slot back past the page cache
  # (O_DIRECT, as the updater's read-back does).
  floor_times=()
  for _ in $(seq "$runs"); do
    rm -f "$work/dev/a.img" "$work/dev/b.img"
    cp "$v1" "$work/dev/a.img"; truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/a.img"
    truncate -s "$((size + 64 * 1024 * 1024))" "$work/dev/b.img"; sync
    # shellcheck disable=SC2016 # the arguments are the inner shell's
    timed sh -c 'cat "$1" > /dev/null && dd if="$2" of="$3" bs=1M conv=notrunc,fsync status=none && dd if="$3" of=/dev/null bs=1M iflag=direct,count_bytes count="$4" status=none' \
      floor "$work/dev/a.img" "$v2" "$work/dev/b.img" "$size"
    floor_times+=("$(last_time)")
  done
  io_floor_s=$(printf '%s\n' "${floor_times[@]}" | median)
  # Never worse: a slot of zeros installing v2, and v2 -> a major upgrade (release 5), made
  # by default and with --image-frames, against zstd -19 of the image plus the index.
  dota_install "diffota, wiped slot, v2" 2 no dota wiped
  dota_install "diffota, wiped slot, v2, --image-frames" 2 no dotaif wiped
  never_worse_rows=("diffota, wiped slot, v2" "diffota, wiped slot, v2, --image-frames")
  # index_bytes STORE VERSION: the index as a device with no delta fetches it (compressed
  # where the store has it) and its signature.
  index_bytes() {
    local index=$work/www/$1/releases/$2/rootfs.didx
    [ -f "$index.zst" ] && index=$index.zst
    echo $(( $(stat -c %s "$index") + $(stat -c %s "$work/www/$1/releases/$2/rootfs.didx.minisig") ))
  }
  declare -A never_worse_index=(["diffota, wiped slot, v2"]=$(index_bytes dota 2) ["diffota, wiped slot, v2, --image-frames"]=$(index_bytes dotaif 2))
  if [ -n "$major" ]; then
    timed "$cs" make --store "$work/www/major" --version 5 --compatible bench --key "$key" "$major"
    store_make_s[major]=$(last_time); store_make_rss[major]=$(last_rss)
    timed "$cs" make --store "$work/www/majorif" --version 5 --compatible bench --key "$key" --image-frames "$major"
    store_make_s[majorif]=$(last_time); store_make_rss[majorif]=$(last_rss)
    dota_install "diffota, major upgrade (v2 -> trixie)" 5 yes major 2
    dota_install "diffota, major upgrade, --image-frames" 5 yes majorif 2
    never_worse_rows+=("diffota, major upgrade (v2 -> trixie)" "diffota, major upgrade, --image-frames")
    never_worse_index["diffota, major upgrade (v2 -> trixie)"]=$(index_bytes major 5)
    never_worse_index["diffota, major upgrade, --image-frames"]=$(index_bytes majorif 5)
  fi

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
  patch_bytes[zstd2]=$last_patch_bytes
  if [ -n "$major" ]; then
    pair_to=$major
    pairwise "zstd -19 of the major upgrade" zstd -19 -T0 -q -f "$major" -o "$work/patch" -- zstd -d -q -f "$work/patch" -o "$work/out.img"
    patch_bytes[zstd5]=$last_patch_bytes
    unset pair_to
  fi
  pairwise "xdelta3 -e -s (defaults)" xdelta3 -e -f -s "$v1" "$v2" "$work/patch" -- xdelta3 -d -f -s "$v1" "$work/patch" "$work/out.img"
  pairwise "xdelta3 -e -9 -S lzma -B image" xdelta3 -e -9 -S lzma -B "$size" -f -s "$v1" "$v2" "$work/patch" \
    -- xdelta3 -d -B "$size" -f -s "$v1" "$work/patch" "$work/out.img"
  patch_bytes[xdelta9]=$last_patch_bytes
  pairwise "zstd -19 --long=31 --patch-from" zstd -19 -T0 -q -f --long=31 --patch-from="$v1" "$v2" -o "$work/patch" \
    -- zstd -d -q -f --long=31 --patch-from="$v1" "$work/patch" -o "$work/out.img"
  pairwise "HDiffPatch (zstd 19)" "$bench/hdiff.py" diff "$v1" "$v2" "$work/patch" \
    -- "$bench/hdiff.py" apply "$v1" "$work/patch" "$work/out.img"
  patch_bytes[hdiff]=$last_patch_bytes
  # Two and three releases behind: HDiffPatch's patch for exactly each pair.
  for pair in 1:3 1:4 2:4; do
    pair_from=$(image_of "${pair%:*}"); pair_to=$(image_of "${pair#*:}")
    pairwise "HDiffPatch (zstd 19), v${pair%:*} -> v${pair#*:}" "$bench/hdiff.py" diff "$pair_from" "$pair_to" "$work/patch" \
      -- "$bench/hdiff.py" apply "$pair_from" "$work/patch" "$work/out.img"
    patch_bytes[hdiff${pair%:*}${pair#*:}]=$last_patch_bytes
  done
  unset pair_to pair_from

  {
    echo "### $kind (v2: $size bytes, $runs runs, $(date -u +%Y-%m-%d))"
    echo
    echo "| tool | downloaded | requests | make | install (median) | make RSS | install RSS | bytes vs casync | bytes vs bita |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for tool in diffota "diffota, factory-flashed" "diffota, factory-flashed, provisioned" "diffota, --delta-level 12" "diffota, --delta-level 19" "diffota, v1 -> v3" "diffota, v1 -> v4" "diffota, v2 -> v4" "diffota, --delta-depth 2, v1 -> v4" "${never_worse_rows[@]}" casync bita zchunk; do
      printf '| %s | %s | %s | %ss | %ss | %s MiB | %s MiB | %s | %s |\n' "$tool" "${bytes[$tool]}" "${requests[$tool]}" \
        "${make_s[$tool]}" "${install_s[$tool]}" "$(mib "${make_rss[$tool]}")" "$(mib "${install_rss[$tool]}")" \
        "$(awk -v a="${bytes[$tool]}" -v b="${bytes[casync]}" 'BEGIN {printf "%.2fx", a / b}')" \
        "$(awk -v a="${bytes[$tool]}" -v b="${bytes[bita]}" 'BEGIN {printf "%.2fx", a / b}')"
    done
    printf '%s\n' "${patch_rows[@]}"
    echo
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3fx", a / b}'; }
    r() { ratio "${bytes[$1]}" "${patch_bytes[$2]}"; }
    echo "Against the goals (issue 29), $kind:"
    echo
    echo "| goal | measured |"
    echo "|---|---|"
    echo "| one release behind, installed through diffota: <= 1.0x HDiffPatch | $(r diffota hdiff) (${bytes[diffota]} B, ${requests[diffota]} requests) |"
    echo "| factory-flashed: <= 0.9x xdelta3 -9 | provisioned as the factory flow does (the factory data's index): $(r "diffota, factory-flashed, provisioned" xdelta9) (${bytes[diffota, factory-flashed, provisioned]} B); never provisioned (fetches the whole index): $(r "diffota, factory-flashed" xdelta9) (${bytes[diffota, factory-flashed]} B) |"
    echo "| two behind (v1 -> v3): <= 1.2x HDiffPatch v1 -> v3, <= 10 requests | $(r "diffota, v1 -> v3" hdiff13) in ${requests[diffota, v1 -> v3]} requests |"
    echo "| three behind (v1 -> v4): <= 1.2x HDiffPatch v1 -> v4, <= 10 requests | $(r "diffota, v1 -> v4" hdiff14) in ${requests[diffota, v1 -> v4]} requests (--delta-depth 2: $(r "diffota, --delta-depth 2, v1 -> v4" hdiff14) in ${requests[diffota, --delta-depth 2, v1 -> v4]}) |"
    echo "| two behind (v2 -> v4): <= 1.2x HDiffPatch v2 -> v4, <= 10 requests | $(r "diffota, v2 -> v4" hdiff24) in ${requests[diffota, v2 -> v4]} requests |"
    echo "| make (default) <= 3x a plain make (--no-delta) | v2 ${make_s[diffota]} s / ${plain_make_s} s = $(ratio "${make_s[diffota]}" "$plain_make_s"); v3 ${dota_make_s[3]} s / ${plain_version_make_s[3]} s = $(ratio "${dota_make_s[3]}" "${plain_version_make_s[3]}"); v4 ${dota_make_s[4]} s / ${plain_version_make_s[4]} s = $(ratio "${dota_make_s[4]}" "${plain_version_make_s[4]}"); --delta-depth 2 (v4 against two bases, not three): v4 ${fleet_make_s[4]} s = $(ratio "${fleet_make_s[4]}" "${plain_version_make_s[4]}"); --delta-level 12: $(ratio "${store_make_s[dota12]}" "$plain_make_s") |"
    for row in "${never_worse_rows[@]}"; do
      case $row in *major*) whole=${patch_bytes[zstd5]} ;; *) whole=${patch_bytes[zstd2]} ;; esac
      echo "| never worse: $row <= zstd -19 of the image + index | ${bytes[$row]} B against $whole + ${never_worse_index[$row]} = $(ratio "${bytes[$row]}" "$((whole + ${never_worse_index[$row]}))") |"
    done
    echo "| install time <= 2x the I/O floor (read the seed, write the slot, read it back: $io_floor_s s) | one behind ${install_s[diffota]} s = $(ratio "${install_s[diffota]}" "$io_floor_s"); factory-flashed ${install_s[diffota, factory-flashed]} s = $(ratio "${install_s[diffota, factory-flashed]}" "$io_floor_s"); v1 -> v4 ${install_s[diffota, v1 -> v4]} s = $(ratio "${install_s[diffota, v1 -> v4]}" "$io_floor_s") |"
    echo "| install peak RSS <= 16 MiB | $(mib "${install_rss[diffota]}") MiB (factory-flashed $(mib "${install_rss[diffota, factory-flashed]}"), v1 -> v4 $(mib "${install_rss[diffota, v1 -> v4]}")) |"
    for version in 2 3 4; do
      echo "| store bytes v$version added, against --no-delta | default ${dota_store_bytes[$version]} = $(ratio "${dota_store_bytes[$version]}" "${plain_store_bytes[$version]}")$( [ "$version" != 4 ] || echo "; --delta-depth 2 ${fleet_store_bytes[$version]} = $(ratio "${fleet_store_bytes[$version]}" "${plain_store_bytes[$version]}")"); plain ${plain_store_bytes[$version]} |"
    done
    echo
    echo "With --image-frames: make of v2 ${store_make_s[dotaif]} s ($(ratio "${store_make_s[dotaif]}" "$plain_make_s") a plain make), store bytes v2 added $dotaif_store_bytes ($(ratio "$dotaif_store_bytes" "${plain_store_bytes[2]}") the plain release)."
    for level in 12 19; do
      echo "With --delta-level $level: make $(ratio "${store_make_s[dota$level]}" "$plain_make_s") a plain make, download $(r "diffota, --delta-level $level" xdelta9) xdelta3 -9, $(r "diffota, --delta-level $level" hdiff) HDiffPatch."
    done
    echo
  } | tee "$results/$kind.md"
done
