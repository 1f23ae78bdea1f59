//! Where the tests find Envoy 1.40: `MESHD_ENVOY`, else `~/.cache/meshd/bin/envoy` (what
//! `make test-deps` installs).

use std::path::PathBuf;

pub fn envoy_binary() -> PathBuf {
    let candidates = [
        std::env::var_os("MESHD_ENVOY").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshd/bin/envoy")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("Envoy 1.40 not found (MESHD_ENVOY or ~/.cache/meshd/bin/envoy): run `make test-deps`"))
}
