//! When a certificate ends: its `notAfter`, read from the DER of an X.509 certificate (RFC 5280 §4.1) by hand.
//! Only the path to `validity` is walked (`Certificate` → `tbsCertificate` → version, serial, signature, issuer
//! → `validity`); nothing else is interpreted, so a full X.509 parser is not worth its weight here. Pure.

/// Why a certificate's end could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable certificate: {0}")]
pub struct CertificateError(&'static str);

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

/// One DER element: its tag, its contents, and what follows it.
fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), CertificateError> {
    let short = CertificateError("truncated");
    let (&tag, rest) = der.split_first().ok_or(short.clone())?;
    let (&first, rest) = rest.split_first().ok_or(short.clone())?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return Err(CertificateError("bad length"));
        }
        let length = rest[..octets].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (length, &rest[octets..])
    };
    if rest.len() < length {
        return Err(short);
    }
    Ok((tag, &rest[..length], &rest[length..]))
}

fn expect(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), CertificateError> {
    match element(der)? {
        (found, contents, rest) if found == tag => Ok((contents, rest)),
        _ => Err(CertificateError("unexpected element")),
    }
}

/// The certificate's `notAfter`, in seconds since the Unix epoch.
///
/// # Errors
/// [`CertificateError`] for DER that is not a certificate's.
pub fn not_after(der: &[u8]) -> Result<i64, CertificateError> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION_TAG) {
        tbs = element(tbs)?.2;
    }
    // serialNumber, signature, issuer: skipped whatever they hold.
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (validity, _) = expect(tbs, SEQUENCE)?;
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    parse_time(tag, time)
}

/// `YYMMDDHHMMSSZ` (UTCTime; years 50–99 are 19xx) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), as RFC 5280 requires
/// them: in UTC, with seconds, no fractions.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, CertificateError> {
    let bad = CertificateError("bad time");
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2]).ok_or(bad.clone())?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4]).ok_or(bad.clone())?, &text[4..]),
        _ => return Err(bad),
    };
    if rest[10] != b'Z' {
        return Err(bad);
    }
    let field = |i: usize| digits(&rest[i..i + 2]).ok_or(bad.clone());
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad);
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |n, b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of one element.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A certificate's shape around `validity`, with filler where nothing is read.
    fn certificate(not_before: (u8, &str), not_after: (u8, &str), version: bool) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(0xa0, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[0x01, 0x23]));
        tbs.extend(tlv(SEQUENCE, &tlv(0x06, &[0x2a, 0x86, 0x48])));
        tbs.extend(tlv(SEQUENCE, &[0x55; 200]));
        let mut validity = tlv(not_before.0, not_before.1.as_bytes());
        validity.extend(tlv(not_after.0, not_after.1.as_bytes()));
        tbs.extend(tlv(SEQUENCE, &validity));
        tbs.extend(tlv(SEQUENCE, &[0x66; 10]));
        let mut cert = tlv(SEQUENCE, &tbs);
        cert.extend(tlv(SEQUENCE, &[0x77; 4]));
        tlv(SEQUENCE, &cert)
    }

    #[test]
    fn the_end_of_validity_is_read_in_both_time_forms() {
        let utc = certificate((UTC_TIME, "260101000000Z"), (UTC_TIME, "261215123456Z"), true);
        // `date -u -d 2026-12-15T12:34:56 +%s`
        assert_eq!(not_after(&utc), Ok(1_797_338_096));
        let generalized = certificate((UTC_TIME, "991231235959Z"), (GENERALIZED_TIME, "20500101000000Z"), false);
        assert_eq!(not_after(&generalized), Ok(2_524_608_000));
        let last_century = certificate((UTC_TIME, "700101000000Z"), (UTC_TIME, "700102000000Z"), true);
        assert_eq!(not_after(&last_century), Ok(86_400));
    }

    #[test]
    fn what_is_no_certificate_is_an_error_not_a_date() {
        let good = certificate((UTC_TIME, "260101000000Z"), (UTC_TIME, "261215123456Z"), true);
        for cut in [0, 1, 5, 40, good.len() - 30] {
            assert!(not_after(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bad in ["261315123456Z", "2612151234Z", "26121512345+0100", "2612151234567"] {
            let cert = certificate((UTC_TIME, "260101000000Z"), (UTC_TIME, bad), true);
            assert!(not_after(&cert).is_err(), "{bad}");
        }
        assert!(not_after(b"\x04\x02hi").is_err());
    }
}
