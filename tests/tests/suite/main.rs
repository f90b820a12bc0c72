//! The end-to-end suite: the real binaries (`diffota`, `chunk-server`), built by cargo for
//! this test run, against real servers on 127.0.0.1 and real tools (minisign, fw_printenv,
//! grub-editenv, dbus-daemon, systemd-analyze, shellcheck). One binary, one module per
//! topic; `cargo test -p diffota-tests` runs it all, `cargo test -p diffota-tests -- install::`
//! one topic.
//!
//! Where a new test goes:
//!
//! | it is about | module |
//! |---|---|
//! | `chunk-server make` (plain chunks, delta frames, killed or concurrent makes) | `publish::make` |
//! | `chunk-server verify`, and publishing mistakes caught with a message | `publish::verify` |
//! | keys and signatures (minisign interop, passwords) | `publish::keys` |
//! | `chunk-server prune` | `publish::prune` |
//! | `chunk-server pull` (a build host without a store) | `publish::pull` |
//! | `chunk-server serve` | `publish::serve` |
//! | channels, phased rollout, canaries, replayed channel files | `rollout` |
//! | an install that goes as planned (what is fetched, HTTPS, file:// stores) | `install::fetch` |
//! | an install cut short: busy, killed, resumed, servers that misbehave | `install::interrupted` |
//! | a release or device input the device refuses | `install::refused` |
//! | delta frames | `install::frames` |
//! | index deltas | `install::index_deltas` |
//! | bootloader environments, trial boots, mark-good, revert, rollback, provision | `boot` |
//! | hooks: each point, "not now" and "never", failures, after-boot hooks across a power cut | `hooks` |
//! | releases of several images: make, the manifest, channels, verify, devices | `images` |
//! | offline bundles (`chunk-server bundle`, `diffota install FILE`) | `bundle` |
//! | the D-Bus service | `dbus` |
//! | outcome reports and metrics | `reports` |
//! | hostile local files: links, FIFOs, huge files, planted locks | `hostile` |
//! | what the binaries print: broken pipes, `--help` | `output` |
//! | the Yocto layer and the systemd units, without a Yocto build | `layer` |
//! | the README's demo and walkthrough, as a newcomer runs them | `demo` |
//!
//! A test builds what it needs with `diffota_tests::fleet::Fleet`: releases made from
//! sample images (plain or with delta frames), channels, bundles (`Fleet::bundle`), a
//! served store, and file-backed devices running any release, configured through the
//! updater's own `Config` (`fleet.device(name, "1.0", size, &url, |config| ...)`). Other
//! shared helpers (keys, fault servers, a report endpoint, bootloader models) live in the
//! `diffota-tests` library (`tests/src/`). A test that needs a Debian tool calls
//! `require_tool` and skips loudly without it, or fails under `DIFFOTA_REQUIRE_TOOLS=1`;
//! add the tool to `scripts/preflight.sh` so the skip is announced before the run.

mod boot;
mod bundle;
mod dbus;
mod demo;
mod hooks;
mod hostile;
mod images;
mod install;
mod layer;
mod output;
mod publish;
mod reports;
mod rollout;
