//! meshd's container image (`make image`, `scripts/build-image.sh`): built from Debian packages
//! alone into an OCI layout, unpacked, and run — `meshd version` and `meshd iptables --dry-run`
//! inside it, with both iptables variants there for the init container.
//!
//! Packs the test build of meshd (`MESHD_IMAGE_BIN`) rather than a release build; the Debian root
//! is debootstrapped once and cached under `~/.cache/meshd/image`. Needs root, debootstrap and
//! umoci (`make test-deps`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err} (make test-deps installs it)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `args` inside the unpacked image's root.
fn inside(rootfs: &Path, args: &[&str]) -> String {
    run(Command::new("chroot").arg(rootfs).args(args))
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_image_runs_meshd_and_carries_both_iptables() {
    let dir = tempfile::tempdir().expect("a private directory");
    let built = run(Command::new(repo().join("scripts/build-image.sh"))
        .env("MESHD_IMAGE_DIR", dir.path())
        // The Debian root comes from the cache `make test-deps` filled: no network here.
        .env("MESHD_IMAGE_OFFLINE", "1")
        .env("MESHD_IMAGE_BIN", meshd_tests::deps::meshd_binary()));
    let image = built.trim().to_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(image.ends_with(&format!("oci:{version}")), "{image}");

    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    // The runtime config umoci wrote from the image's: meshd is the entrypoint.
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("config.json")).expect("the bundle's config"),
    )
    .expect("JSON");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/local/bin/meshd", "serve"])
    );

    let rootfs = bundle.join("rootfs");
    let reported = inside(&rootfs, &["/usr/local/bin/meshd", "version"]);
    assert!(reported.contains(&format!("meshd {version}")), "{reported}");
    let rules = inside(&rootfs, &["/usr/local/bin/meshd", "iptables", "--dry-run"]);
    assert!(
        rules.contains("*nat") && rules.contains("ISTIO_OUTPUT") && rules.contains("COMMIT"),
        "{rules}"
    );
    for variant in ["iptables-legacy", "iptables-nft", "iptables-restore"] {
        let version = inside(&rootfs, &[variant, "--version"]);
        assert!(
            version.starts_with(&format!("{variant} v")) || version.starts_with("iptables v"),
            "{variant}: {version}"
        );
    }
}

#[test]
fn the_manifests_and_the_chart_pin_the_image_to_this_version() {
    let version = env!("CARGO_PKG_VERSION");
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).expect(path);
    let install = read("manifests/install.yaml");
    assert!(
        !install.contains(":latest"),
        "install.yaml names a moving tag"
    );
    assert_eq!(
        install
            .matches(&format!("image: ghcr.io/meshd/meshd:{version}"))
            .count(),
        1,
        "install.yaml runs meshd {version}"
    );
    let chart = read("manifests/helm/meshd/Chart.yaml");
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "the chart's appVersion (its default image tag) is {version}"
    );
    assert!(read("manifests/helm/meshd/values.yaml").contains("repository: ghcr.io/meshd/meshd"));
}
