//! Durations as Istio reads them from YAML: Go's `time.ParseDuration` syntax — a sequence of
//! decimal numbers, each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`,
//! `h`), like `300ms`, `1.5s`, `1m30s` or `2h45m`; a bare `0` is zero.

/// Longest duration Go can represent: `i64::MAX` nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration into `(seconds, nanos)`, as protobuf's `Duration` holds it. Negative
/// durations are refused: nothing meshd reads may be negative.
pub fn parse(text: &str) -> Result<(i64, i32), String> {
    let nanos = parse_nanos(text)?;
    let seconds = i64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too long"))?;
    let nanos = i32::try_from(nanos % 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too long"))?;
    Ok((seconds, nanos))
}

/// Parses a duration into a [`std::time::Duration`].
pub fn parse_std(text: &str) -> Result<std::time::Duration, String> {
    let (seconds, nanos) = parse(text)?;
    Ok(std::time::Duration::new(seconds as u64, nanos as u32))
}

fn parse_nanos(text: &str) -> Result<u128, String> {
    let invalid = || format!("invalid duration {text:?} (use e.g. 10s, 250ms, 1m30s)");
    let mut rest = text.trim();
    if let Some(unsigned) = rest.strip_prefix('-') {
        if unsigned
            .trim_start_matches(['0', '.'])
            .chars()
            .all(|c| !c.is_ascii_digit())
        {
            // `-0s` is zero in Go; anything else below zero is refused.
            rest = unsigned;
        } else {
            return Err(format!("duration {text:?} is negative"));
        }
    } else if let Some(unsigned) = rest.strip_prefix('+') {
        rest = unsigned;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => {
                let len = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "duration {text:?} has no unit (use e.g. 10s, 250ms)"
                ));
            }
            other => return Err(format!("duration {text:?} has an unknown unit {other:?}")),
        };
        let too_long = || format!("duration {text:?} is too long");
        let mut value: u128 = 0;
        for d in whole.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(d - b'0')))
                .filter(|v| *v <= MAX_NANOS)
                .ok_or_else(too_long)?;
        }
        let mut nanos = value.checked_mul(scale).ok_or_else(too_long)?;
        // The fraction scaled by the unit; digits beyond nanosecond precision are dropped, as Go does.
        let mut place = scale;
        for d in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(d - b'0') * place;
        }
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(too_long)?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(parse("10s"), Ok((10, 0)));
        assert_eq!(parse("1.5s"), Ok((1, 500_000_000)));
        assert_eq!(parse("0.5s"), Ok((0, 500_000_000)));
        assert_eq!(parse("250ms"), Ok((0, 250_000_000)));
        assert_eq!(parse("1m30s"), Ok((90, 0)));
        assert_eq!(parse("1h2m"), Ok((3720, 0)));
        assert_eq!(parse("2h45m0.5s"), Ok((9900, 500_000_000)));
        assert_eq!(parse("1.5h"), Ok((5400, 0)));
        assert_eq!(parse(".5s"), Ok((0, 500_000_000)));
        assert_eq!(parse("5.s"), Ok((5, 0)));
        assert_eq!(parse("100us"), Ok((0, 100_000)));
        assert_eq!(parse("100µs"), Ok((0, 100_000)));
        assert_eq!(parse("7ns"), Ok((0, 7)));
        assert_eq!(parse("0"), Ok((0, 0)));
        assert_eq!(parse("+3s"), Ok((3, 0)));
        assert_eq!(parse("-0s"), Ok((0, 0)));
        assert_eq!(parse("1.0000000001s"), Ok((1, 0)));
    }

    #[test]
    fn what_go_refuses_is_refused() {
        for bad in [
            "", "s", "10", "1x", ".s", "1..5s", "1s5", "-1s", "1 s", "ms", "1e3s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("10").unwrap_err().contains("no unit"));
    }

    #[test]
    fn durations_beyond_go_range_are_refused() {
        assert_eq!(parse("2562047h"), Ok((9_223_369_200, 0)));
        assert!(parse("2562048h").is_err());
        assert!(parse("99999999999999999999s").is_err());
    }
}
