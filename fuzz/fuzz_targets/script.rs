//! Fuzz bytes read as a script of stream events: requests with names, nonces (the last one sent,
//! none, or garbage), versions and errors drawn from small vocabularies so that ACKs and NACKs
//! match often; generator changes; pushes.

use meshd_proto::type_url;

/// Reads choices from the fuzz input; zeros once it runs out.
pub struct Script<'a> {
    data: &'a [u8],
}

pub const TYPES: [&str; 7] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
    type_url::SECRET,
    "type.googleapis.com/envoy.service.runtime.v3.Runtime",
    "",
];

const NAMES: [&str; 6] = ["a", "b", "c", "*", "", "outbound|80||x.default.svc.cluster.local"];

/// What a request says about the response it answers.
pub enum Nonce {
    Last,
    Empty,
    Garbage(String),
}

pub enum Event {
    Request {
        type_url: &'static str,
        names: Vec<String>,
        unsubscribe: Vec<String>,
        nonce: Nonce,
        version: String,
        error: Option<String>,
    },
    Resources {
        type_url: &'static str,
        resources: Vec<(String, String)>,
    },
    Push,
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Script { data }
    }

    pub fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// A short string straight from the input.
    fn text(&mut self) -> String {
        let len = self.below(12);
        let take = len.min(self.data.len());
        let (head, rest) = self.data.split_at(take);
        self.data = rest;
        String::from_utf8_lossy(head).into_owned()
    }

    fn name(&mut self) -> String {
        if self.below(5) == 0 {
            self.text()
        } else {
            NAMES[self.below(NAMES.len())].to_string()
        }
    }

    fn names(&mut self) -> Vec<String> {
        let n = self.below(4);
        (0..n).map(|_| self.name()).collect()
    }

    pub fn event(&mut self) -> Event {
        match self.below(8) {
            0 | 1 => {
                let type_url = TYPES[self.below(5)];
                let n = self.below(5);
                let resources = (0..n)
                    .map(|_| (self.name(), format!("v{}", self.below(3))))
                    .collect();
                Event::Resources {
                    type_url,
                    resources,
                }
            }
            2 => Event::Push,
            _ => {
                let type_url = TYPES[self.below(TYPES.len())];
                let names = self.names();
                let unsubscribe = if self.below(4) == 0 {
                    self.names()
                } else {
                    Vec::new()
                };
                let nonce = match self.below(4) {
                    0 => Nonce::Empty,
                    1 => Nonce::Garbage(self.text()),
                    _ => Nonce::Last,
                };
                let version = if self.below(2) == 0 {
                    String::new()
                } else {
                    self.text()
                };
                let error = (self.below(4) == 0).then(|| self.text());
                Event::Request {
                    type_url,
                    names,
                    unsubscribe,
                    nonce,
                    version,
                    error,
                }
            }
        }
    }
}
