//! The Sidecar resource end to end: an egress scope shrinks what a real proxy receives (measured
//! in its own config dump) and what it can reach, without touching other proxies.

use std::time::Duration;

use meshd_tests::{Mesh, PodSpec, wait_for, wait_until, yaml};

const CONVERGE: Duration = Duration::from_secs(30);

/// Outbound clusters an Envoy holds, from its admin config dump.
fn outbound_clusters(pod: &meshd_tests::Pod) -> Vec<String> {
    let dump: serde_json::Value = serde_json::from_str(
        &pod.envoy_admin("/config_dump?resource=dynamic_active_clusters")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str().map(String::from))
        .filter(|n| n.starts_with("outbound|"))
        .collect()
}

#[test]
fn a_sidecar_egress_scope_shrinks_what_a_proxy_receives_and_reaches() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let client_spec = PodSpec::new("client", "shop")
        .ip("10.77.1.20".parse()?)
        .label("app", "client")
        .sidecar();
    let other_spec = PodSpec::new("other", "blog")
        .ip("10.77.1.21".parse()?)
        .label("app", "other")
        .sidecar();
    let shop_spec = PodSpec::new("catalog", "shop")
        .ip("10.77.1.10".parse()?)
        .label("app", "catalog")
        .sidecar();
    let blog_spec = PodSpec::new("posts", "blog")
        .ip("10.77.1.11".parse()?)
        .label("app", "posts")
        .sidecar();
    let mut docs = vec![
        client_spec.yaml()?,
        other_spec.yaml()?,
        shop_spec.yaml()?,
        blog_spec.yaml()?,
    ];
    // Ten services in each of two namespaces; only catalog and posts have a pod.
    for i in 0..10 {
        let (shop, blog) = (
            if i == 0 {
                "catalog".to_string()
            } else {
                format!("shop-{i}")
            },
            if i == 0 {
                "posts".to_string()
            } else {
                format!("blog-{i}")
            },
        );
        docs.push(yaml::service(
            &shop,
            "shop",
            &format!("10.96.1.{}", i + 1),
            &[("http", 8080, 8080)],
            &[("app", shop.as_str())],
        ));
        docs.push(yaml::service(
            &blog,
            "blog",
            &format!("10.96.2.{}", i + 1),
            &[("http", 8080, 8080)],
            &[("app", blog.as_str())],
        ));
    }
    mesh.write_config("mesh.yaml", &docs)?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let mut apps = Vec::new();
    for spec in [shop_spec, blog_spec] {
        let pod = mesh.add_pod(spec)?;
        pod.start_echo(&[8080], &[])?;
        apps.push(pod);
    }
    let client = mesh.add_pod(client_spec)?;
    let other = mesh.add_pod(other_spec)?;

    let all = wait_for(CONVERGE, || {
        Some(outbound_clusters(&client)).filter(|c| c.len() == 20)
    });
    assert!(
        all.is_some(),
        "client never saw all 20 services: {:?}\n{}",
        outbound_clusters(&client),
        meshd.log()
    );
    assert_eq!(
        client.curl("http://10.96.2.1:8080/", &[]).status,
        200,
        "blog reachable before the Sidecar"
    );

    mesh.write_config(
        "sidecar.yaml",
        &["apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: [\"./*\"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"
        .to_string()],
    )?;
    let scoped = wait_until(CONVERGE, || outbound_clusters(&client).len() == 10);
    let now = outbound_clusters(&client);
    assert!(
        scoped,
        "the Sidecar did not shrink the client's clusters: {} left: {now:?}",
        now.len()
    );
    assert!(
        now.iter().all(|c| c.ends_with(".shop.svc.cluster.local")),
        "{now:?}"
    );
    let shop = client.curl("http://10.96.1.1:8080/", &[]);
    assert_eq!(shop.status, 200, "{shop:?}");
    let blog = client.curl("http://10.96.2.1:8080/", &["--max-time", "5"]);
    assert_ne!(
        blog.status, 200,
        "a service outside the egress scope was reachable: {blog:?}"
    );
    // A proxy in another namespace is not scoped by shop's Sidecar.
    assert_eq!(outbound_clusters(&other).len(), 20);
    Ok(())
}
