use super::*;

fn registry(yaml: &str) -> (Registry, Vec<Finding>) {
    let (objects, errors) = crate::documents::parse(yaml, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let mut findings = Vec::new();
    let registry = Registry::build(&objects, &mut findings);
    (registry, findings)
}

#[test]
fn a_service_port_declared_twice_is_an_error_and_only_the_first_is_served() {
    let (registry, findings) = registry(
        "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: default}\n\
         spec:\n  clusterIP: 10.0.0.5\n  selector: {app: cart}\n  ports:\n\
         \x20 - {name: h2c-x, port: 9080}\n  - {name: https, port: 443}\n  - {port: 9080}\n",
    );
    let service = &registry.services["cart.default.svc.cluster.local"];
    let ports: Vec<(u32, &str)> = service
        .ports
        .iter()
        .map(|p| (p.port, p.name.as_str()))
        .collect();
    assert_eq!(ports, [(9080, "h2c-x"), (443, "https")]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Error);
    assert_eq!(findings[0].field, "spec.ports[2].port");
    assert!(
        findings[0].message.contains("already defined"),
        "{findings:?}"
    );
}

#[test]
fn endpoints_that_are_not_an_ip_and_port_are_left_out_with_a_warning() {
    let (registry, findings) = registry(
        "apiVersion: v1\nkind: Service\nmetadata: {name: search, namespace: other}\n\
         spec:\n  selector: {app: search}\n  ports: [{name: http, port: 8443}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
         metadata: {name: search-1, namespace: other, labels: {kubernetes.io/service-name: search}}\n\
         endpoints: [{addresses: [\"10.0.0\"]}, {addresses: [\"10.0.0.7\"]}]\n\
         ports: [{name: http, port: 8443}]\n",
    );
    let endpoints = registry.endpoints("search.other.svc.cluster.local", 8443);
    let addresses: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addresses, ["10.0.0.7"]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(findings[0].message.contains("\"10.0.0\""), "{findings:?}");
}

#[test]
fn served_ports_list_what_every_service_routes_to_each_address_in_service_order() {
    let (registry, _) = registry(
        "apiVersion: v1\nkind: Service\nmetadata: {name: b-web, namespace: default}\n\
         spec:\n  clusterIP: 10.0.0.5\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {name: b-web, namespace: default}\n\
         subsets:\n- addresses: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]\n  ports: [{name: http, port: 8080}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: a-grpc, namespace: default}\n\
         spec:\n  clusterIP: 10.0.0.6\n  ports: [{name: grpc, port: 90, targetPort: 8080}, {name: tcp, port: 91}]\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {name: a-grpc, namespace: default}\n\
         subsets:\n- addresses: [{ip: 10.1.0.1}]\n  ports: [{name: grpc, port: 8080}, {name: tcp, port: 9100}]\n",
    );
    let served = |ip: &str| -> Vec<(u32, Protocol)> {
        registry
            .served_ports
            .get(ip)
            .into_iter()
            .flatten()
            .map(|s| (s.port, s.protocol))
            .collect()
    };
    // a-grpc before b-web (hostname order), its ports in declaration order.
    assert_eq!(
        served("10.1.0.1"),
        [
            (8080, Protocol::Grpc),
            (9100, Protocol::Tcp),
            (8080, Protocol::Http)
        ]
    );
    assert_eq!(served("10.1.0.2"), [(8080, Protocol::Http)]);
    assert!(served("10.1.0.3").is_empty());
}
