//! The CA on disk and the certificates it issues.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use meshd_ca::{CaError, CaOptions, CertificateAuthority, Identity, uri_sans};
use rcgen::{KeyPair, PublicKeyData};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::support::*;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn not_after(der: &[u8]) -> SystemTime {
    let secs = parse(der).validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

#[test]
fn generated_root_is_persisted_and_reloaded_identically() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let first = mk_ca(&ca_dir);
    let bundle = first.root_bundle_pem();
    let leaf = first.mint(&mk_identity("default", "a"), None).unwrap();
    drop(first);

    for file in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        assert!(ca_dir.join(file).exists(), "{file} written");
    }
    let key_mode = std::fs::metadata(ca_dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o077, 0, "the key is readable by its owner only");
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap(),
        bundle
    );

    let second = mk_ca(&ca_dir);
    assert_eq!(second.root_bundle_pem(), bundle);
    assert_eq!(second.root_not_after(), not_after(&ders(&bundle)[0]));
    // Certificates from before the restart and after it share the root.
    verify(&ders(&leaf.chain_pem), &bundle).unwrap();
    let after = second.mint(&mk_identity("default", "a"), None).unwrap();
    verify(&ders(&after.chain_pem), &bundle).unwrap();
}

#[test]
fn generated_root_is_a_ten_year_p256_ca_for_signing_certificates_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let roots = ders(&ca.root_bundle_pem());
    assert_eq!(roots.len(), 1);
    let root = parse(&roots[0]);
    assert!(root.is_ca());
    assert_eq!(root.subject(), root.issuer());
    let ku = root.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(!ku.digital_signature() && !ku.key_encipherment());
    assert!(matches!(
        root.public_key().parsed().unwrap(),
        PublicKey::EC(_)
    ));
    let left = secs_between(SystemTime::now(), ca.root_not_after());
    assert!(
        (meshd_ca::ROOT_TTL.as_secs() as i64 - left).abs() <= 5,
        "{left}s left"
    );
    assert_eq!(meshd_ca::ROOT_TTL, Duration::from_secs(3650 * 86400));
}

#[test]
fn plug_in_layout_with_an_intermediate_chains_leaf_to_intermediate_to_root() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = write_plugin_ca(dir.path(), Duration::from_secs(365 * 86400));
    let ca = mk_ca(dir.path());
    assert_eq!(ca.root_bundle_pem(), plugin.root_pem);

    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    let chain = ders(&issued.chain_pem);
    assert_eq!(chain.len(), 2, "leaf and intermediate, not the root");
    assert_eq!(chain[1], ders(&plugin.intermediate_pem)[0]);
    assert_eq!(parse(&chain[0]).issuer(), parse(&chain[1]).subject());
    verify(&chain, &ca.root_bundle_pem()).unwrap();
    // Not trusted without the intermediate: the leaf is not signed by the root itself.
    assert!(verify(&chain[..1], &ca.root_bundle_pem()).is_err());

    let (csr, _key) = mk_csr(None, &[], &[]);
    let signed = ca
        .sign_csr(&csr, &mk_identity("default", "a"), None)
        .unwrap();
    assert_eq!(signed.len(), 3, "leaf, intermediate, root");
    assert_eq!(signed[1], plugin.intermediate_pem);
    assert_eq!(signed[2], plugin.root_pem);
    let signed_ders: Vec<Vec<u8>> = signed.iter().flat_map(|pem| ders(pem)).collect();
    verify(&signed_ders[..2], &plugin.root_pem).unwrap();
}

#[test]
fn leaves_never_outlive_the_signing_chain() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = write_plugin_ca(dir.path(), Duration::from_secs(3600));
    let ca = mk_ca(dir.path());
    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    assert!(issued.not_after <= plugin.intermediate_not_after);
    assert!(secs_between(SystemTime::now(), issued.not_after) <= 3600);
}

#[test]
fn rsa_2048_plug_in_root_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root_pem = write_rsa_plugin_root(dir.path());
    let ca = mk_ca(dir.path());
    assert_eq!(ca.root_bundle_pem(), root_pem);
    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    let chain = ders(&issued.chain_pem);
    assert_eq!(chain.len(), 1, "the root signs directly; no intermediates");
    verify(&chain, &root_pem).unwrap();
    let (csr, _key) = mk_csr(None, &[], &[]);
    let signed = ca
        .sign_csr(&csr, &mk_identity("default", "a"), None)
        .unwrap();
    assert_eq!(signed, vec![signed[0].clone(), root_pem.clone()]);
    verify(&ders(&signed[0]), &root_pem).unwrap();
}

#[test]
fn a_key_that_does_not_match_the_ca_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin_ca(dir.path(), Duration::from_secs(86400));
    let other = KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), other.serialize_pem()).unwrap();
    let err = CertificateAuthority::load_or_generate(CaOptions::new(dir.path(), TD)).unwrap_err();
    assert!(matches!(err, CaError::InvalidCaFiles { .. }), "{err}");
    assert!(err.to_string().contains("not the key"), "{err}");
}

#[test]
fn a_chain_that_does_not_reach_the_trusted_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin_ca(dir.path(), Duration::from_secs(86400));
    let elsewhere = tempfile::tempdir().unwrap();
    let other = write_plugin_ca(elsewhere.path(), Duration::from_secs(86400));
    std::fs::write(dir.path().join("root-cert.pem"), other.root_pem).unwrap();
    let err = CertificateAuthority::load_or_generate(CaOptions::new(dir.path(), TD)).unwrap_err();
    assert!(matches!(err, CaError::InvalidCaFiles { .. }), "{err}");
}

#[test]
fn a_ca_certificate_without_its_key_is_refused_rather_than_replaced() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin_ca(dir.path(), Duration::from_secs(86400));
    std::fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let err = CertificateAuthority::load_or_generate(CaOptions::new(dir.path(), TD)).unwrap_err();
    assert!(err.to_string().contains("without ca-key.pem"), "{err}");
}

#[test]
fn minted_certificate_carries_the_identity_and_istio_key_usages() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let id = mk_identity("bookinfo", "productpage");
    let before = SystemTime::now();
    let issued = ca.mint(&id, None).unwrap();
    let chain = ders(&issued.chain_pem);
    assert_eq!(chain.len(), 1, "signed by the root directly");
    let leaf = parse(&chain[0]);

    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/bookinfo/sa/productpage"
        )]
    );
    assert!(san.critical, "subject is empty, so the SAN is critical");
    assert_eq!(leaf.subject().iter().count(), 0);
    assert_eq!(uri_sans(&chain[0]).unwrap(), vec![id.uri()]);

    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    assert!(
        leaf.basic_constraints().unwrap().is_some(),
        "CA:false explicit"
    );
    assert_eq!(
        leaf.issuer(),
        parse(&ders(&ca.root_bundle_pem())[0]).subject()
    );

    // NotBefore two minutes back for clock skew; 24 h of life from now.
    let skew = secs_between(issued.not_before, before);
    assert!(
        (119..=121).contains(&skew),
        "not_before {skew}s before issuance"
    );
    assert_eq!(
        issued.not_before,
        SystemTime::UNIX_EPOCH + Duration::from_secs(leaf.validity().not_before.timestamp() as u64)
    );
    assert_eq!(issued.not_after, not_after(&chain[0]));
    let life = secs_between(before, issued.not_after);
    assert!((86399..=86401).contains(&life), "lives {life}s");

    assert_eq!(issued.serial, leaf.raw_serial_as_string().replace(':', ""));
    assert_eq!(issued.serial.len(), 32);

    assert!(
        issued
            .key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let key = KeyPair::from_pem(issued.key_pem.expose()).unwrap();
    assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(
        key.der_bytes(),
        leaf.public_key().subject_public_key.data.as_ref()
    );
    verify(&chain, &ca.root_bundle_pem()).unwrap();
}

#[test]
fn every_certificate_gets_a_fresh_key_and_serial() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let id = mk_identity("default", "a");
    let a = ca.mint(&id, None).unwrap();
    let b = ca.mint(&id, None).unwrap();
    assert_ne!(a.serial, b.serial);
    assert_ne!(a.key_pem, b.key_pem);
}

#[test]
fn requested_ttl_is_clamped_to_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(CaOptions {
        workload_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(3600),
        ..CaOptions::new(dir.path(), TD)
    })
    .unwrap();
    let id = mk_identity("default", "a");
    let life = |ttl| {
        let issued = ca.mint(&id, ttl).unwrap();
        secs_between(issued.not_before, issued.not_after) - 120
    };
    assert_eq!(life(Some(Duration::from_secs(48 * 3600))), 3600);
    assert_eq!(life(Some(Duration::from_secs(1800))), 1800);
    assert_eq!(life(None), 600, "the workload TTL when none is asked");
    assert_eq!(life(Some(Duration::ZERO)), 600, "zero means the default");
}

#[test]
fn rotation_is_due_at_half_life() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    let life = issued.not_after.duration_since(issued.not_before).unwrap();
    assert_eq!(issued.rotation_due(), issued.not_before + life / 2);
    assert!(issued.rotation_due() > SystemTime::now());
    assert!(issued.rotation_due() < issued.not_after);
}

#[test]
fn identities_of_another_trust_domain_are_not_issued() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let err = ca
        .mint(&Identity::new("example.org", "default", "a"), None)
        .unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");
    let err = ca
        .mint(&Identity::new(TD, "default/sa/admin", "a"), None)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidIdentity { .. }), "{err}");
}

#[test]
fn sign_csr_ignores_the_subject_and_sets_the_callers_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let id = mk_identity("default", "a");
    let (csr, key) = mk_csr(Some("admin.example.com"), &[], &[]);
    let chain = ca.sign_csr(&csr, &id, None).unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.root_bundle_pem());
    let leaf_der = &ders(&chain[0])[0];
    let leaf = parse(leaf_der);
    assert_eq!(leaf.subject().iter().count(), 0, "subject not copied");
    assert_eq!(uri_sans(leaf_der).unwrap(), vec![id.uri()]);
    assert_eq!(
        key.der_bytes(),
        leaf.public_key().subject_public_key.data.as_ref()
    );
    verify(std::slice::from_ref(leaf_der), &ca.root_bundle_pem()).unwrap();
}

#[test]
fn sign_csr_accepts_a_csr_naming_the_callers_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let id = mk_identity("default", "a");
    let (csr, _key) = mk_csr(None, &[&id.uri()], &[]);
    let chain = ca
        .sign_csr(&csr, &id, Some(Duration::from_secs(3600)))
        .unwrap();
    let leaf_der = &ders(&chain[0])[0];
    assert_eq!(uri_sans(leaf_der).unwrap(), vec![id.uri()]);
    let leaf = parse(leaf_der);
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 3600 + 120);
}

#[test]
fn sign_csr_refuses_a_foreign_san() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let id = mk_identity("default", "a");
    let admin = mk_identity("istio-system", "admin").uri();
    let own = id.uri();
    for (uris, dns) in [
        (vec![admin.as_str()], vec![]),
        (vec![own.as_str(), admin.as_str()], vec![]),
        (vec![], vec!["example.com"]),
    ] {
        let (csr, _key) = mk_csr(None, &uris, &dns);
        let err = ca.sign_csr(&csr, &id, None).unwrap_err();
        assert!(matches!(err, CaError::ForeignSan { .. }), "{err}");
    }
}

#[test]
fn sign_csr_refuses_a_csr_whose_signature_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let (csr, _key) = mk_csr(None, &[], &[]);
    let block = pem::parse(&csr).unwrap();
    let mut der = block.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca
        .sign_csr(&tampered, &mk_identity("default", "a"), None)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    let err = ca
        .sign_csr("not a csr", &mk_identity("default", "a"), None)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
}

#[test]
fn serving_certificate_names_the_dns_names_and_ips() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let names = vec![
        "istiod.istio-system.svc".to_string(),
        "meshd.istio-system.svc.cluster.local".to_string(),
    ];
    let ip = "127.0.0.1".parse().unwrap();
    let issued = ca.serving_cert(&names, &[ip]).unwrap();
    let chain = ders(&issued.chain_pem);
    let leaf = parse(&chain[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![
            GeneralName::DNSName("istiod.istio-system.svc"),
            GeneralName::DNSName("meshd.istio-system.svc.cluster.local"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
        ]
    );
    verify(&chain, &ca.root_bundle_pem()).unwrap();
    let leaf_der = rustls_pki_types::CertificateDer::from(chain[0].clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    for name in ["istiod.istio-system.svc", "127.0.0.1"] {
        let name = rustls_pki_types::ServerName::try_from(name).unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
    }
    let life = secs_between(issued.not_before, issued.not_after) - 120;
    assert_eq!(life, 24 * 3600, "the workload TTL");
    let longer = ca
        .serving_cert_with_ttl(&names, &[], Some(Duration::from_secs(30 * 86400)))
        .unwrap();
    assert_eq!(
        secs_between(longer.not_before, longer.not_after) - 120,
        30 * 86400
    );
    assert!(
        ca.serving_cert(&["bad name\u{e9}".to_string()], &[])
            .is_err()
    );
    assert!(ca.serving_cert(&[], &[]).is_err());
}

/// Copies another CA directory's files over `dir`, as a Secret update would.
fn replace_ca_files(dir: &std::path::Path, from: &std::path::Path) {
    for file in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
    }
}

#[test]
fn root_rotation_keeps_both_roots_in_the_bundle_until_the_old_one_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let old_root = ca.root_bundle_pem();
    let old_leaf = ca.mint(&mk_identity("default", "a"), None).unwrap();
    assert!(!ca.reload().unwrap(), "nothing changed yet");

    let next = tempfile::tempdir().unwrap();
    let new_root = mk_ca(next.path()).root_bundle_pem();
    assert_ne!(new_root, old_root);
    replace_ca_files(dir.path(), next.path());

    assert!(ca.reload().unwrap());
    let bundle = ca.root_bundle_pem();
    assert_eq!(bundle, format!("{new_root}{old_root}"));
    let new_leaf = ca.mint(&mk_identity("default", "a"), None).unwrap();
    // During the overlap both generations verify against the bundle.
    verify(&ders(&old_leaf.chain_pem), &bundle).unwrap();
    verify(&ders(&new_leaf.chain_pem), &bundle).unwrap();
    verify(&ders(&new_leaf.chain_pem), &new_root).unwrap();
    assert!(verify(&ders(&new_leaf.chain_pem), &old_root).is_err());
    assert!(!ca.reload().unwrap(), "the same files again are no change");

    assert!(ca.forget_old_roots());
    assert_eq!(ca.root_bundle_pem(), new_root);
    assert!(!ca.forget_old_roots());
}

#[test]
fn an_old_root_that_returns_to_root_cert_pem_is_not_listed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let old_root = ca.root_bundle_pem();
    let next = tempfile::tempdir().unwrap();
    let new_root = mk_ca(next.path()).root_bundle_pem();
    replace_ca_files(dir.path(), next.path());
    // The operator's bundle lists both roots explicitly.
    std::fs::write(
        dir.path().join("root-cert.pem"),
        format!("{new_root}{old_root}"),
    )
    .unwrap();
    assert!(ca.reload().unwrap());
    assert_eq!(ca.root_bundle_pem(), format!("{new_root}{old_root}"));
    assert!(
        !ca.forget_old_roots(),
        "nothing to forget: root-cert.pem has it"
    );
    assert_eq!(ca.root_bundle_pem(), format!("{new_root}{old_root}"));
}

#[test]
fn a_reload_of_broken_files_keeps_the_working_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let bundle = ca.root_bundle_pem();
    std::fs::write(dir.path().join("ca-cert.pem"), "garbage").unwrap();
    assert!(ca.reload().is_err());
    assert_eq!(ca.root_bundle_pem(), bundle);
    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    verify(&ders(&issued.chain_pem), &bundle).unwrap();
}

#[test]
fn intermediate_rotation_under_the_same_root_changes_the_chain_not_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let root = PluginRoot::new();
    let first = root.write_intermediate(dir.path(), Duration::from_secs(86400));
    let ca = mk_ca(dir.path());
    let before = ca.mint(&mk_identity("default", "a"), None).unwrap();
    assert_eq!(ders(&before.chain_pem)[1], ders(&first.intermediate_pem)[0]);

    let second = root.write_intermediate(dir.path(), Duration::from_secs(86400));
    assert!(ca.reload().unwrap());
    let after = ca.mint(&mk_identity("default", "a"), None).unwrap();
    assert_eq!(ders(&after.chain_pem)[1], ders(&second.intermediate_pem)[0]);
    assert_eq!(ca.root_bundle_pem(), root.pem());
    assert!(!ca.forget_old_roots(), "the root did not change");
    verify(&ders(&before.chain_pem), &ca.root_bundle_pem()).unwrap();
    verify(&ders(&after.chain_pem), &ca.root_bundle_pem()).unwrap();
}

#[test]
fn key_material_never_appears_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca(dir.path());
    let issued = ca.mint(&mk_identity("default", "a"), None).unwrap();
    let leaf_key = key_body(issued.key_pem.expose());
    let printed = format!("{issued:?} {issued:#?}");
    assert!(printed.contains("<redacted>"));
    assert!(!printed.contains(&leaf_key));

    let ca_key = std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap();
    let printed = format!("{ca:?} {ca:#?}");
    assert!(!printed.contains(&key_body(&ca_key)), "{printed}");
    assert!(!printed.contains("PRIVATE KEY"));
}

/// 16 base64 characters from the middle of a PEM key: secret bytes, not the fixed PKCS#8 header.
fn key_body(pem: &str) -> String {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mid = body.len() / 2;
    body[mid..mid + 16].to_string()
}
