//! CEL expressions as Envoy's access-log filter (`envoy.access_loggers.extension_filters.cel`)
//! takes them. istiod only parses a Telemetry's `filter.expression`; Envoy 1.40 also refuses, when
//! it loads the listener, calls of functions it does not register and every comprehension macro
//! (`all`, `exists`, `exists_one`, `map`, `filter`). Both are checked here, so an expression
//! Envoy would refuse is reported on the Telemetry instead of failing a whole listener.

/// Functions (global or receiver-style) Envoy 1.40 resolves, calibrated against it: it resolves
/// by name, so `string(x)` is refused whatever `x` is.
const FUNCTIONS: [&str; 24] = [
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "bytes",
    "bool",
    "type",
    "timestamp",
    "duration",
    "dyn",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
];

/// Macros that expand to comprehensions, which Envoy's CEL runtime has disabled.
const COMPREHENSIONS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// Words CEL reserves: never an identifier.
const RESERVED: [&str; 18] = [
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
    "in",
];

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Literal,
    Punct(&'static str),
}

/// Parses `expression`; `Err` says what is wrong, and where.
pub fn parse(expression: &str) -> Result<(), String> {
    let tokens = lex(expression)?;
    let mut parser = Parser { tokens, pos: 0 };
    parser.expr(0)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(()),
        Some(t) => Err(format!("unexpected {} after the expression", describe(t))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("identifier {name:?}"),
        Token::Literal => "literal".to_string(),
        Token::Punct(p) => format!("{p:?}"),
    }
}

const PUNCTS: [&str; 26] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}", "=", "&",
];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = number(&chars, i)?;
            tokens.push(Token::Literal);
        } else if c == '"' || c == '\'' {
            i = string(&chars, i, false)?;
            tokens.push(Token::Literal);
        } else if matches!(c, 'r' | 'R' | 'b' | 'B') && matches!(chars.get(i + 1), Some('"' | '\''))
        {
            i = string(&chars, i + 1, matches!(c, 'r' | 'R'))?;
            tokens.push(Token::Literal);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match word.as_str() {
                "true" | "false" | "null" => tokens.push(Token::Literal),
                "in" => tokens.push(Token::Punct("in")),
                _ => tokens.push(Token::Ident(word)),
            }
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                return Err(format!("unexpected character {c:?} at {i}"));
            };
            if matches!(*p, "=" | "&") {
                return Err(format!("unexpected {p:?} at {i}"));
            }
            tokens.push(Token::Punct(p));
            i += p.len();
        }
    }
    Ok(tokens)
}

/// Skips a number starting at `i`: decimal or hex integers with an optional `u`, floats with a
/// fraction and/or exponent.
fn number(chars: &[char], mut i: usize) -> Result<usize, String> {
    let digits = |i: &mut usize, hex: bool| {
        let start = *i;
        while *i < chars.len()
            && (chars[*i].is_ascii_digit() || (hex && chars[*i].is_ascii_hexdigit()))
        {
            *i += 1;
        }
        *i > start
    };
    if chars[i] == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
        i += 2;
        if !digits(&mut i, true) {
            return Err("hexadecimal literal without digits".to_string());
        }
    } else {
        digits(&mut i, false);
        if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            i += 1;
            digits(&mut i, false);
        }
        if matches!(chars.get(i), Some('e' | 'E')) {
            i += 1;
            if matches!(chars.get(i), Some('+' | '-')) {
                i += 1;
            }
            if !digits(&mut i, false) {
                return Err("exponent without digits".to_string());
            }
        }
    }
    if matches!(chars.get(i), Some('u' | 'U')) {
        i += 1;
    }
    if chars
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        return Err(format!("malformed number at {i}"));
    }
    Ok(i)
}

/// Skips a quoted string (single, double or triple quotes) starting at `i`.
fn string(chars: &[char], i: usize, raw: bool) -> Result<usize, String> {
    let quote = chars[i];
    let triple = chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < chars.len() {
        let c = chars[j];
        if c == '\\' && !raw {
            j += 2;
            continue;
        }
        if c == quote
            && (!triple || (chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote)))
        {
            return Ok(j + if triple { 3 } else { 1 });
        }
        if c == '\n' && !triple {
            break;
        }
        j += 1;
    }
    Err(format!("unterminated string literal at {i}"))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Binary operators by binding strength (CEL's precedence, loosest first).
fn binary_precedence(p: &str) -> Option<u8> {
    match p {
        "||" => Some(1),
        "&&" => Some(2),
        "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" => Some(3),
        "+" | "-" => Some(4),
        "*" | "/" | "%" => Some(5),
        _ => None,
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Token::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.eat(p) {
            return Ok(());
        }
        Err(match self.peek() {
            Some(t) => format!("expected {p:?}, found {}", describe(t)),
            None => format!("expected {p:?} at the end"),
        })
    }

    /// An expression whose binary operators bind at least as tightly as `min`; the ternary
    /// conditional only at the top.
    fn expr(&mut self, min: u8) -> Result<(), String> {
        self.unary()?;
        while let Some(Token::Punct(p)) = self.peek() {
            let Some(prec) = binary_precedence(p) else {
                break;
            };
            if prec < min.max(1) {
                break;
            }
            self.pos += 1;
            self.expr(prec + 1)?;
        }
        if min == 0 && self.eat("?") {
            self.expr(1)?;
            self.expect(":")?;
            self.expr(0)?;
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), String> {
        while self.eat("!") || self.eat("-") {}
        self.member().map(|_| ())
    }

    /// A primary and what follows it; true when the last step selects a field (`x.f`), the
    /// only argument `has()` takes.
    fn member(&mut self) -> Result<bool, String> {
        self.primary()?;
        let mut selects = false;
        loop {
            if self.eat(".") {
                let name = self.ident()?;
                selects = true;
                if self.eat("(") {
                    self.call(&name)?;
                    selects = false;
                }
            } else if self.eat("[") {
                self.expr(0)?;
                self.expect("]")?;
                selects = false;
            } else {
                return Ok(selects);
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Token::Ident(name)) if !RESERVED.contains(&name.as_str()) => {
                self.pos += 1;
                Ok(name)
            }
            Some(t) => Err(format!("expected an identifier, found {}", describe(&t))),
            None => Err("expected an identifier at the end".to_string()),
        }
    }

    /// The arguments of a call of `name`, its `(` taken.
    fn call(&mut self, name: &str) -> Result<(), String> {
        if COMPREHENSIONS.contains(&name) {
            return Err(format!(
                "{name}() is a comprehension, which Envoy's CEL runtime does not support"
            ));
        }
        if name == "has" {
            // A macro: its one argument must be a field selection, `has(request.headers.x)`.
            let selects = self.member()?;
            if !selects || !self.eat(")") {
                return Err("has() argument must be a field selection".to_string());
            }
            return Ok(());
        }
        if !FUNCTIONS.contains(&name) {
            return Err(format!("no function {name}() in Envoy's CEL runtime"));
        }
        self.list(")")
    }

    /// Comma-separated expressions up to `close` (a trailing comma allowed).
    fn list(&mut self, close: &str) -> Result<(), String> {
        if self.eat(close) {
            return Ok(());
        }
        loop {
            self.expr(0)?;
            if self.eat(close) {
                return Ok(());
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(());
            }
        }
    }

    fn primary(&mut self) -> Result<(), String> {
        match self.peek().cloned() {
            Some(Token::Literal) => {
                self.pos += 1;
                Ok(())
            }
            Some(Token::Punct("(")) => {
                self.pos += 1;
                self.expr(0)?;
                self.expect(")")
            }
            Some(Token::Punct("[")) => {
                self.pos += 1;
                self.list("]")
            }
            Some(Token::Punct("{")) => {
                self.pos += 1;
                self.entries(false)
            }
            Some(Token::Punct(".")) | Some(Token::Ident(_)) => {
                self.eat(".");
                let name = self.ident()?;
                if self.eat("(") {
                    return self.call(&name);
                }
                // A message literal: `google.protobuf.Int64Value{value: 1}`.
                let mut look = self.pos;
                while matches!(self.tokens.get(look), Some(Token::Punct(".")))
                    && matches!(self.tokens.get(look + 1), Some(Token::Ident(_)))
                {
                    look += 2;
                }
                if matches!(self.tokens.get(look), Some(Token::Punct("{"))) {
                    self.pos = look + 1;
                    return self.entries(true);
                }
                Ok(())
            }
            Some(t) => Err(format!("unexpected {}", describe(&t))),
            None => Err("unexpected end of the expression".to_string()),
        }
    }

    /// Map or message entries up to `}`, its `{` taken: `key: value`, keys being field names in a
    /// message.
    fn entries(&mut self, fields: bool) -> Result<(), String> {
        if self.eat("}") {
            return Ok(());
        }
        loop {
            if fields {
                self.ident()?;
            } else {
                self.expr(0)?;
            }
            self.expect(":")?;
            self.expr(0)?;
            if self.eat("}") {
                return Ok(());
            }
            self.expect(",")?;
            if self.eat("}") {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_envoy_accepts_parse() {
        for e in [
            "response.code >= 400",
            "size(request.path) > 1",
            "request.path.startsWith('/a') && !has(request.headers.foo)",
            "has(request.headers.foo) || has(xds.cluster_metadata.filter_metadata.istio)",
            "request.headers['x-a'] == \"b\" || response.code == 0x10",
            "'a' in ['a', 'b',]",
            "{'a': 1}['a'] == 1",
            "true ? 1 : 2",
            "-1 < 0 && 1.0e3 > 1 && uint(1) > 0u",
            "google.protobuf.Int64Value{value: 1} == 1",
            "request.time.getHours() > 1",
            "bytes('a') == b'a' && r'\\d' == '\\\\d'",
            "xds.cluster_name == 'outbound|80||a.b'",
            "response.code_details",
        ] {
            assert_eq!(parse(e), Ok(()), "{e}");
        }
    }

    #[test]
    fn what_envoy_refuses_is_an_error() {
        for (e, why) in [
            ("", "unexpected end"),
            ("response.code >= ", "unexpected end"),
            ("1 +", "unexpected end"),
            ("(a", "expected \")\""),
            ("'open", "unterminated"),
            ("a = 1", "unexpected \"=\""),
            ("string(1) == '1'", "no function string()"),
            ("foo(1)", "no function foo()"),
            (
                "request.path.lowerAscii() == 'a'",
                "no function lowerAscii()",
            ),
            ("[1].all(x, x > 0)", "comprehension"),
            ("request.headers.exists(x, x == 'a')", "comprehension"),
            ("a b", "unexpected identifier"),
            ("if", "expected an identifier"),
            ("has(request.headers['x-debug'])", "field selection"),
            ("has(request)", "field selection"),
            ("has(a.b == 1)", "field selection"),
        ] {
            let err = parse(e).unwrap_err();
            assert!(err.contains(why), "{e:?}: {err}");
        }
    }
}
