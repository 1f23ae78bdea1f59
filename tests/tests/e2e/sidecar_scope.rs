//! The Sidecar resource end to end: an egress scope shrinks what a real proxy receives (measured
//! in its own config dump) and what it can reach, without touching other proxies.

use meshd_tests::{PodSpec, wait_for, wait_until, yaml};

use crate::support::{CONVERGE, MeshSetup};

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
    let pod = |name: &str, namespace: &str, ip: &str| -> anyhow::Result<PodSpec> {
        Ok(PodSpec::new(name, namespace)
            .ip(ip.parse()?)
            .label("app", name)
            .sidecar())
    };
    // Ten services in each of two namespaces; only catalog and posts have a pod.
    let mut services = Vec::new();
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
        services.push(yaml::service(
            &shop,
            "shop",
            &format!("10.96.1.{}", i + 1),
            &[("http", 8080, 8080)],
            &[("app", shop.as_str())],
        ));
        services.push(yaml::service(
            &blog,
            "blog",
            &format!("10.96.2.{}", i + 1),
            &[("http", 8080, 8080)],
            &[("app", blog.as_str())],
        ));
    }
    let env = MeshSetup::new()
        .config(services)
        .app(pod("catalog", "shop", "10.77.1.10")?, &[8080], &[])
        .app(pod("posts", "blog", "10.77.1.11")?, &[8080], &[])
        .caller(pod("client", "shop", "10.77.1.20")?)
        .caller(pod("other", "blog", "10.77.1.21")?)
        .start()?;
    let (client, other) = (env.pod("client")?, env.pod("other")?);

    let all = wait_for(CONVERGE, || {
        Some(outbound_clusters(&client)).filter(|c| c.len() == 20)
    });
    assert!(
        all.is_some(),
        "client never saw all 20 services: {:?}\n{}",
        outbound_clusters(&client),
        env.meshd.log()
    );
    assert_eq!(
        client.curl("http://10.96.2.1:8080/", &[]).status,
        200,
        "blog reachable before the Sidecar"
    );

    env.mesh.write_config(
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
