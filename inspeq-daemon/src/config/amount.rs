//! The small value languages inside words: thresholds (`1.5g`, `90%`, `10k/sec`) and durations (`5 minutes`, `90s`).
//!
//! Inspeqtor only took integers, and a decimal silently dropped the whole file (its #147); decimals are accepted here.

use std::time::Duration;

use crate::config::model::{Amount, Suffix};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error(
        "invalid amount `{0}`, expected a number with an optional k, m, g, t, p or % suffix and optional /sec, like `1.5g` or `10k/sec`"
    )]
    Invalid(String),
    #[error("unsupported rate `{0}`, expected `/sec`")]
    Rate(String),
}

/// Parses a threshold such as `250m`, `1.5G`, `90%`, `1k/sec`.
///
/// # Errors
/// [`AmountError`] when the text is not a number with an optional suffix and rate.
pub fn parse_amount(text: &str) -> Result<Amount, AmountError> {
    let invalid = || AmountError::Invalid(text.to_owned());
    let (body, per_sec) = match text.split_once('/') {
        Some((body, "sec")) => (body, true),
        Some((_, rate)) => return Err(AmountError::Rate(format!("/{rate}"))),
        None => (text, false),
    };
    let (number, suffix) = match body.chars().last() {
        Some('%') => (&body[..body.len() - 1], Suffix::Percent),
        Some(c) => match "kmgtp".find(c.to_ascii_lowercase()) {
            Some(power) => {
                let power = u32::try_from(power).map_err(|_| invalid())? + 1;
                (&body[..body.len() - c.len_utf8()], Suffix::Binary(power))
            }
            None => (body, Suffix::None),
        },
        None => return Err(invalid()),
    };
    let well_formed = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|b| *b == b'.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    if !well_formed {
        return Err(invalid());
    }
    let base: f64 = number.parse().map_err(|_| invalid())?;
    let scale = match suffix {
        Suffix::Binary(power) => 1024_f64.powi(i32::try_from(power).map_err(|_| invalid())?),
        Suffix::None | Suffix::Percent => 1.0,
    };
    let value = base * scale;
    if !value.is_finite() {
        return Err(invalid());
    }
    Ok(Amount { value, suffix, per_sec, text: text.to_owned() })
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration `{0}`, expected a count and a unit, like `5 minutes`, `90s` or `10 cycles`")]
    Invalid(String),
    #[error("a zero-length window can never hold a restart, expected a duration of at least one second")]
    Zero,
    #[error("invalid time `{0}`, expected a number and ms, s or m, like `500ms`, `2s` or `1.5s`")]
    Short(String),
}

/// A window for `within`: a time span or a number of cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Time(Duration),
    Cycles(u32),
}

/// Parses `N unit` (two words) or `Nunit` (one word).
///
/// # Errors
/// [`DurationError`] for an unknown unit, a malformed count or a zero-length window.
pub fn parse_window(words: &[&str]) -> Result<Span, DurationError> {
    let joined = words.join(" ");
    let invalid = || DurationError::Invalid(joined.clone());
    let (count, unit) = match words {
        [count, unit] => ((*count).to_owned(), (*unit).to_owned()),
        [one] => {
            let split = one.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
            (one[..split].to_owned(), one[split..].to_owned())
        }
        _ => return Err(invalid()),
    };
    let count: u32 = count.parse().map_err(|_| invalid())?;
    let seconds: u64 = match unit.as_str() {
        "cycle" | "cycles" => {
            return if count == 0 { Err(DurationError::Zero) } else { Ok(Span::Cycles(count)) };
        }
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(invalid()),
    };
    if count == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Span::Time(Duration::from_secs(u64::from(count) * seconds)))
}

/// A duration as the rule language writes it (`5 minutes`, `2 hours`, `90 seconds`): the inverse of
/// [`parse_window`], for rules the engine adds itself and shows in `status`.
#[must_use]
pub fn window_text(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 && s > 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// A probe's time (`500ms`, `2s`, `1.5s`, `3 seconds`): a decimal count and `ms` or a unit of seconds or minutes,
/// above zero and below a day.
///
/// # Errors
/// [`DurationError::Short`] for anything else, zero included.
pub fn parse_short_duration(words: &[&str]) -> Result<Duration, DurationError> {
    let joined = words.join(" ");
    let invalid = || DurationError::Short(joined.clone());
    let (count, unit) = match words {
        [count, unit] => (*count, *unit),
        [one] => {
            let split = one.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(invalid)?;
            one.split_at(split)
        }
        _ => return Err(invalid()),
    };
    let well_formed = !count.is_empty()
        && count.bytes().filter(|b| *b == b'.').count() <= 1
        && !count.starts_with('.')
        && !count.ends_with('.');
    if !well_formed {
        return Err(invalid());
    }
    let count: f64 = count.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        _ => return Err(invalid()),
    };
    let millis = count * millis;
    if !(1.0..86_400_000.0).contains(&millis) {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(millis / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_take_milliseconds_seconds_and_minutes() {
        let ms = |w: &[&str]| parse_short_duration(w).map(|d| d.as_millis());
        assert_eq!(ms(&["500ms"]), Ok(500));
        assert_eq!(ms(&["1.5s"]), Ok(1500));
        assert_eq!(ms(&["3", "seconds"]), Ok(3000));
        assert_eq!(ms(&["2m"]), Ok(120_000));
        assert_eq!(ms(&["0s"]), Err(DurationError::Short("0s".to_owned())));
        for bad in [&["5"][..], &["5x"], &[".5s"], &["1..5s"], &["0.1ms"], &["2", "days"]] {
            assert!(parse_short_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn amounts_scale_by_powers_of_1024_and_keep_their_text() {
        let a = parse_amount("1.5g").unwrap();
        assert_eq!((a.value, a.suffix, a.per_sec), (1.5 * 1024.0 * 1024.0 * 1024.0, Suffix::Binary(3), false));
        assert_eq!(parse_amount("250M").unwrap().value, 250.0 * 1024.0 * 1024.0);
        let p = parse_amount("90%").unwrap();
        assert_eq!((p.value, p.suffix), (90.0, Suffix::Percent));
        let r = parse_amount("1k/sec").unwrap();
        assert_eq!((r.value, r.per_sec, r.text.as_str()), (1024.0, true, "1k/sec"));
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for bad in ["", "g", "1..5", ".5", "5.", "1x", "-1", "1gg", "%"] {
            assert!(parse_amount(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_amount("250m/min"), Err(AmountError::Rate("/min".into())));
    }

    #[test]
    fn windows_in_time_or_cycles() {
        assert_eq!(parse_window(&["5", "minutes"]), Ok(Span::Time(Duration::from_secs(5 * 60))));
        assert_eq!(parse_window(&["90s"]), Ok(Span::Time(Duration::from_secs(90))));
        assert_eq!(parse_window(&["10", "cycles"]), Ok(Span::Cycles(10)));
        assert_eq!(parse_window(&["0", "minutes"]), Err(DurationError::Zero));
        assert!(parse_window(&["5", "fortnights"]).is_err());
    }

    #[test]
    fn a_written_window_reads_back_as_itself() {
        for secs in [1, 59, 60, 90, 300, 3600, 5400, 86_400] {
            let d = Duration::from_secs(secs);
            let text = window_text(d);
            let words: Vec<&str> = text.split(' ').collect();
            assert_eq!(parse_window(&words), Ok(Span::Time(d)), "{text}");
        }
    }
}
