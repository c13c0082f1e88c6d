//! Human durations for flags: `30s`, `500ms`, `2m`, `1m30s`, `1.5s`.

use std::time::Duration;

/// Why a duration flag's value was refused; clap shows it after the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration; write e.g. 30s, 500ms or 2m")]
    Empty,
    /// A part's number is not a number.
    #[error("{0:?} is not a duration; write e.g. 30s, 500ms or 2m")]
    NotANumber(String),
    /// A number without a unit.
    #[error("{0:?} lacks a unit (ms, s, m or h)")]
    NoUnit(String),
    /// A unit that is not one of ours.
    #[error("unknown unit {unit:?} in {text:?} (ms, s, m or h)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole value.
        text: String,
    },
    /// Larger than a `Duration` holds.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a duration written as one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`
/// (e.g. `500ms`, `30s`, `1m30s`, `0.5s`). A bare `0` is zero. Used as a clap value parser, so
/// the error is the message clap shows.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
        let unit_secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(DurationError::NoUnit(text.to_owned())),
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                })
            }
        };
        let out_of_range = || DurationError::OutOfRange(text.to_owned());
        let part = Duration::try_from_secs_f64(value * unit_secs).map_err(|_| out_of_range())?;
        total = total.checked_add(part).ok_or_else(out_of_range)?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "", "s", "30", "10 s", "5x", "1.2.3s", "-1s", "ms500", "1e99h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_duration("30").map_err(|e| e.to_string()),
            Err("\"30\" lacks a unit (ms, s, m or h)".to_owned())
        );
    }
}
