//! Generates meshd's Envoy and Istio wire types. The Envoy API comes from the `.proto` sources the
//! `envoy-types` crate ships: one descriptor set, compiled here with protox, is both embedded (so
//! meshd can print any Envoy message as the canonical JSON Envoy itself prints) and turned into Rust
//! types by prost. The gRPC services (ADS, Istio's certificate service) are generated only with the
//! `grpc` feature, so crates that merely build messages stay free of tonic and its runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The messages and services meshd sends, reads or serves; their imports come along.
const FILES: &[&str] = &[
    "envoy/admin/v3/config_dump.proto",
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/grpc_credential/v3/file_based_metadata.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/rbac/v3/rbac.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/filters/cel/v3/cel.proto",
    "envoy/extensions/access_loggers/stats/v3/stats.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/lua/v3/lua.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/set_filter_state/v3/set_filter_state.proto",
    "envoy/extensions/filters/network/sni_cluster/v3/sni_cluster.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/matching/actions/transform_stat/v3/transform_stat.proto",
    "envoy/extensions/matching/common_inputs/stats/v3/stats.proto",
    "envoy/extensions/request_id/uuid/v3/uuid.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/status/v3/csds.proto",
];

fn main() {
    let root = envoy_types_dir().join("proto");
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|p| p.exists())
    .collect();
    let mut compiler =
        protox::Compiler::new(&includes).unwrap_or_else(|e| panic!("reading Envoy protos: {e:?}"));
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(FILES)
        .unwrap_or_else(|e| panic!("compiling Envoy protos: {e:?}"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // Encoded by protox itself, not through prost-types: prost-types drops the custom options
    // (`(validate.rules)` and the like) that `meshd_proto::validate` reads from the pool.
    let bytes = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("envoy_descriptors.bin"), bytes).expect("writing descriptor set");
    let set = compiler.file_descriptor_set();

    // Well-known types generated too, not taken from prost-types: the CA's `Struct` below then
    // shares them. `envoy.rs` is the nested module tree (`envoy::config::...`) that `pb` includes.
    config()
        .compile_well_known_types()
        .include_file("envoy.rs")
        .compile_fds(set)
        .unwrap_or_else(|e| panic!("generating code for the Envoy API: {e}"));
    println!("cargo:rerun-if-changed=build.rs");

    compile_istio_ca();
}

/// prost settings shared by both APIs, and the tonic client and server with the `grpc` feature.
fn config() -> prost_build::Config {
    let mut config = prost_build::Config::new();
    // `prost::Name` on every message: `pack` and `unpack` build type URLs from it, and Envoy
    // expects `type.googleapis.com/` ones (prost's default domain is empty).
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    // Build scripts are compiled with their package's features, so `cfg` sees `grpc` here.
    #[cfg(feature = "grpc")]
    config.service_generator(
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_well_known_types(true)
            .service_generator(),
    );
    config
}

/// Istio's certificate API (`proto/istio/ca.proto`, ours, wire-compatible with Istio's). Its
/// `google.protobuf.Struct` is the one generated with the Envoy API, so the workspace has one.
fn compile_istio_ca() {
    const CA_PROTO: &str = "istio/ca.proto";
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let set = protox::compile([CA_PROTO], [&manifest])
        .unwrap_or_else(|e| panic!("compiling {CA_PROTO}: {e:?}"));
    config()
        // Drop prost-build's default mapping to prost-types, then point at our own.
        .compile_well_known_types()
        .extern_path(".google.protobuf", "crate::pb::google::protobuf")
        .compile_fds(set)
        .unwrap_or_else(|e| panic!("generating code for {CA_PROTO}: {e}"));
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join(CA_PROTO).display()
    );
}

/// Where cargo unpacked `envoy-types` (registry, vendor dir or git checkout), asked of cargo itself.
fn envoy_types_dir() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("TARGET");
    // Only this platform's packages; offline first (quick), online if cargo has not fetched them all yet.
    let run = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &target,
            "--manifest-path",
        ])
        .arg(Path::new(&manifest).join("Cargo.toml"));
        if offline {
            cmd.arg("--offline");
        }
        cmd.output().expect("running cargo metadata")
    };
    let mut output = run(true);
    if !output.status.success() {
        output = run(false);
    }
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata output");
    let packages = meta["packages"].as_array().expect("packages");
    let pkg = packages
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .expect("envoy-types in the dependency graph");
    let manifest_path = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"));
    manifest_path.parent().expect("package dir").to_path_buf()
}
