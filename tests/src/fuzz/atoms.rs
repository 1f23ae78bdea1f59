//! The values Istio and Kubernetes fields hold, drawn at random: mostly ones users write, and —
//! with the generator's hostility — the edges and mistakes that validation has to catch (ports 0
//! and 65536, negative and odd Go durations, regexes RE2 refuses, wildcard hosts in the wrong
//! place, reserved headers, garbage).

use serde_json::{Value, json};

use super::rng::Rng;

/// Where TLS settings point: the campaign writes a certificate, a key and a CA there, relative
/// to the directory Envoy runs in.
pub const CERT_DIR: &str = "certs";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const CA_FILE: &str = "ca.pem";

/// Draws field values; `hostility` is the percentage of draws that come from the hostile lists.
pub struct Atoms {
    pub rng: Rng,
    pub hostility: u32,
}

const PORTS: [u64; 10] = [80, 443, 8080, 9080, 3306, 5432, 15443, 8443, 9090, 6379];
const HOSTILE_PORTS: [i64; 14] = [
    0,
    1,
    65535,
    65536,
    70000,
    4_294_967_295,
    4_294_967_296,
    -1,
    15001,
    15006,
    15021,
    15090,
    15000,
    15020,
];

const DURATIONS: [&str; 12] = [
    "1s", "500ms", "1m30s", "10s", "2m", "1h", "250ms", "0.5s", "3s", "1.5s", "30s", "100ms",
];
const HOSTILE_DURATIONS: [&str; 28] = [
    "0s",
    "0",
    "-1s",
    "1d",
    "10",
    "",
    "1us",
    "1µs",
    "1ns",
    "999ms",
    "1ms",
    "0.0001s",
    "+5s",
    ".5s",
    "1e3s",
    "1s1s",
    "2562047h47m16.854775807s",
    "2562048h",
    "9999999999999s",
    "315576000001s",
    "1h-1m",
    "s",
    "5 s",
    "1S",
    "1.s",
    "0.000000001s",
    "1m60s",
    "86400000h",
];

const REGEXES: [&str; 10] = [
    "^/api/.*",
    "[a-z]+",
    "(foo|bar)/v[0-9]+",
    ".*",
    "/users/[0-9]{1,6}",
    "(?i)chrome",
    "[[:alpha:]]+",
    "\\d+\\.\\d+",
    "^$",
    "a|b|c",
];
const HOSTILE_REGEXES: [&str; 26] = [
    "(",
    "[",
    "a**",
    "(?=x)",
    "(?<=a)b",
    "(?!x)y",
    "(a)\\1",
    "a{1001}",
    "(a{100}){100}",
    "[a-z]{1,1000}",
    "((((((((((a{50}))))))))))",
    "x{2,1}",
    "\\p{Foo}",
    "(?P<name>a)",
    "\\C",
    "\\Z",
    "a{,5}",
    "\\Q*\\E",
    "",
    "(?s).",
    "[z-a]",
    "\\",
    "(?<name>a)",
    "(?x) a b # c",
    "\u{0}",
    "[^\\x00-\\x{10FFFF}]",
];

const HOSTS: [&str; 8] = [
    "example.com",
    "api.example.com",
    "*.example.com",
    "httpbin.org",
    "db.external",
    "*",
    "cache.internal",
    "*.svc.cluster.local",
];
const HOSTILE_HOSTS: [&str; 26] = [
    "a.*.com",
    "*.",
    "**.com",
    "1.2.3.4",
    "::1",
    "[::1]",
    "foo..bar",
    "-bad.example",
    "UPPER.Example.COM",
    "with space",
    "",
    "foo.bar:80",
    "ünicode.example",
    "*.*",
    ".",
    "trailing.dot.",
    "under_score.example",
    "10.0.0.0/8",
    "*com",
    "a/b",
    "x",
    "*.cluster.local",
    "example.com\n",
    "%",
    "0.0.0.0",
    "localhost",
];

const HEADER_NAMES: [&str; 8] = [
    "x-user",
    "x-tenant",
    "end-user",
    "x-request-id-copy",
    "cookie",
    "user-agent",
    "x-b3-flags",
    "accept",
];
const HOSTILE_HEADER_NAMES: [&str; 20] = [
    ":path",
    ":authority",
    ":method",
    ":scheme",
    "host",
    "Host",
    "X-Upper",
    "bad header",
    "",
    "x\u{0}y",
    "te",
    "connection",
    "transfer-encoding",
    "x-ü",
    "keep-alive",
    "upgrade",
    ":status",
    "x-envoy-original-path",
    "content-length",
    "x:y",
];

const HEADER_VALUES: [&str; 6] = ["v1", "true", "gold", "application/json", "a b", "123"];
const HOSTILE_HEADER_VALUES: [&str; 14] = [
    "",
    "with\nnewline",
    "with\r\nsplit: 1",
    "%DOWNSTREAM_REMOTE_ADDRESS%",
    "%BAD",
    "%%",
    "a%b",
    "%START_TIME(%s)%",
    "%REQ(:path)%",
    "\u{0}",
    "%UNKNOWN_COMMAND%",
    " leading",
    "trailing ",
    "\u{7f}",
];

const IPS: [&str; 6] = [
    "10.0.0.1",
    "10.1.2.3",
    "192.168.1.10",
    "172.16.0.5",
    "2001:db8::1",
    "10.20.30.40",
];
const HOSTILE_IPS: [&str; 12] = [
    "300.1.1.1",
    "abc",
    "",
    "0.0.0.0",
    "255.255.255.255",
    "::",
    "10.0.0",
    "1.2.3.4.5",
    "fe80::1%eth0",
    "01.02.03.04",
    "127.0.0.1",
    "::ffff:1.2.3.4",
];
const CIDRS: [&str; 5] = [
    "10.0.0.0/8",
    "192.168.0.0/16",
    "10.1.2.3",
    "2001:db8::/32",
    "0.0.0.0/0",
];
const HOSTILE_CIDRS: [&str; 8] = [
    "10.0.0.0/33",
    "10.0.0.1/8",
    "::/129",
    "abc/8",
    "10.0.0.0/",
    "/8",
    "10.0.0.0/-1",
    "1.2.3.4/32/1",
];

const LONG_LABEL_KEY: &str =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const LONG_LABEL_VALUE: &str = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";

const NAMES: [&str; 8] = ["web", "api", "db", "cart", "reviews", "v1", "x-1", "a"];
const HOSTILE_NAMES: [&str; 8] = [
    "UPPER",
    "-dash",
    "dash-",
    "under_score",
    "dot.ted",
    "",
    "ünicode",
    "with space",
];

impl Atoms {
    pub fn new(rng: Rng, hostility: u32) -> Atoms {
        Atoms { rng, hostility }
    }

    /// True when this draw should come from a hostile list.
    pub fn hostile(&mut self) -> bool {
        self.rng.chance(self.hostility)
    }

    fn choose(&mut self, valid: &[&str], hostile: &[&str]) -> String {
        if self.hostile() {
            (*self.rng.pick(hostile)).to_string()
        } else {
            (*self.rng.pick(valid)).to_string()
        }
    }

    pub fn port(&mut self) -> Value {
        if self.hostile() {
            json!(*self.rng.pick(&HOSTILE_PORTS))
        } else if self.rng.chance(30) {
            json!(self.rng.range(1024, 32767))
        } else {
            json!(*self.rng.pick(&PORTS))
        }
    }

    /// A port drawn from `known` (ports other objects declare) most of the time.
    pub fn port_from(&mut self, known: &[u64]) -> Value {
        if !known.is_empty() && !self.hostile() && self.rng.chance(80) {
            json!(*self.rng.pick(known))
        } else {
            self.port()
        }
    }

    pub fn duration(&mut self) -> Value {
        if self.hostile() && self.rng.chance(10) {
            return json!(self.rng.range(0, 100));
        }
        json!(self.choose(&DURATIONS, &HOSTILE_DURATIONS))
    }

    pub fn regex(&mut self) -> String {
        if self.hostile() && self.rng.chance(15) {
            // A repeat big enough to pass the syntax check and blow the RE2 program size.
            let n = self.rng.range(100, 5000);
            return format!("[a-z0-9]{{1,{n}}}\\.example");
        }
        self.choose(&REGEXES, &HOSTILE_REGEXES)
    }

    pub fn host(&mut self) -> String {
        if self.hostile() && self.rng.chance(5) {
            return "a".repeat(self.rng.range(60, 300) as usize) + ".example";
        }
        self.choose(&HOSTS, &HOSTILE_HOSTS)
    }

    pub fn header_name(&mut self) -> String {
        self.choose(&HEADER_NAMES, &HOSTILE_HEADER_NAMES)
    }

    pub fn header_value(&mut self) -> String {
        self.choose(&HEADER_VALUES, &HOSTILE_HEADER_VALUES)
    }

    pub fn ip(&mut self) -> String {
        if !self.hostile() && self.rng.chance(60) {
            return format!(
                "10.{}.{}.{}",
                self.rng.range(0, 255),
                self.rng.range(0, 255),
                self.rng.range(1, 254)
            );
        }
        self.choose(&IPS, &HOSTILE_IPS)
    }

    pub fn cidr(&mut self) -> String {
        self.choose(&CIDRS, &HOSTILE_CIDRS)
    }

    pub fn name(&mut self) -> String {
        if self.hostile() && self.rng.chance(10) {
            return "n".repeat(self.rng.range(60, 300) as usize);
        }
        self.choose(&NAMES, &HOSTILE_NAMES)
    }

    /// A file a TLS setting names: one the campaign provides, or an empty path. Never a missing
    /// or unreadable file: what the proxy's disk holds is beyond what any control plane can
    /// predict, so Envoy refusing it would say nothing about meshd.
    pub fn cert_path(&mut self, file: &str) -> String {
        if self.hostile() && self.rng.chance(30) {
            return String::new();
        }
        format!("{CERT_DIR}/{file}")
    }

    /// A weight out of 100, or one of the values weights must not take.
    pub fn weight(&mut self) -> Value {
        if self.hostile() {
            return json!(*self.rng.pick(&[-1i64, 0, 101, 1000, 4_294_967_296, 100]));
        }
        json!(self.rng.range(0, 100))
    }

    /// A percentage (`{value: ...}` holds it in Istio's schema).
    pub fn percent(&mut self) -> Value {
        if self.hostile() {
            return json!(
                *self
                    .rng
                    .pick(&[-1.0f64, 100.5, 1e9, 0.0001, f64::MIN_POSITIVE])
            );
        }
        json!(*self.rng.pick(&[0.0f64, 10.0, 50.0, 99.9, 100.0, 12.5]))
    }

    /// A count (connections, retries, ejection percentages).
    pub fn count(&mut self) -> Value {
        if self.hostile() {
            return json!(*self.rng.pick(&[
                -1i64,
                0,
                i64::from(i32::MAX),
                i64::from(u32::MAX),
                i64::MAX,
                101
            ]));
        }
        json!(self.rng.range(1, 100))
    }

    /// Any scalar at all, of any JSON type: for mutations that break a field's type.
    pub fn garbage(&mut self) -> Value {
        match self.rng.below(9) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(-7),
            3 => json!(1.5e300),
            4 => json!("🦀"),
            5 => json!([]),
            6 => json!({}),
            7 => json!("x".repeat(self.rng.range(1, 2000) as usize)),
            _ => json!(u64::MAX),
        }
    }

    /// A label key: mostly the ones selectors in the batch share, so selections happen.
    pub fn label_key(&mut self) -> String {
        self.choose(
            &["app", "version", "tier", "istio", "example.com/team"],
            &[
                "-bad",
                "a/b/c",
                "",
                "UPPER",
                LONG_LABEL_KEY,
                "example.com/",
                "/name",
            ],
        )
    }

    pub fn label_value(&mut self) -> String {
        self.choose(
            &["web", "v1", "v2", "ingressgateway", "backend", "canary"],
            &["", "bad value", "-x", LONG_LABEL_VALUE, "a/b"],
        )
    }
}
