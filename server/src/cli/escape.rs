//! How `corekv-cli` writes arbitrary bytes as command-line text, and back.
//!
//! Escaped form (the default), inspired by C string literals:
//!
//! | bytes                       | written as       |
//! |-----------------------------|------------------|
//! | printable ASCII 0x20..=0x7e except `\` | itself |
//! | `\`                         | `\\`             |
//! | tab, newline, carriage return, NUL | `\t` `\n` `\r` `\0` |
//! | any other byte              | `\xHH` (two hex digits) |
//!
//! Parsing accepts the same escapes (hex digits in either case); any other character after a
//! backslash is an error, and non-ASCII characters in an argument stand for their UTF-8 bytes.
//! So `printf`-style `a\x00b` is the three bytes `61 00 62`, and every output line can be fed
//! back as an argument. With `--hex`, keys and values are plain hexadecimal instead.

/// Writes `bytes` in the escaped form.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0 => out.push_str("\\0"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Reads the escaped form.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let escape = bytes.get(i + 1).copied();
        match escape {
            Some(b'\\') => out.push(b'\\'),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("{text:?}: `\\x` at byte {i} must be followed by two hex digits")
                    })?;
                out.push(hex);
                i += 4;
                continue;
            }
            Some(other) => {
                return Err(format!(
                    "{text:?}: unknown escape `\\{}` at byte {i} (use \\\\ \\t \\n \\r \\0 or \\xHH)",
                    other as char
                ));
            }
            None => return Err(format!("{text:?}: ends with a lone backslash (write \\\\)")),
        }
        i += 2;
    }
    Ok(out)
}

/// Writes `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads hex (either case, even length).
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("{text:?}: hex needs an even number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text:?}: not hex at position {i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(from_hex(&to_hex(&all)).unwrap(), all);
    }

    #[test]
    fn escaped_text_is_readable() {
        assert_eq!(escape(b"user:1"), "user:1");
        assert_eq!(escape(b"a\\b\tc\n\0\xff"), "a\\\\b\\tc\\n\\0\\xff");
        assert_eq!(unescape("a\\x00B\\xFFz").unwrap(), b"a\x00B\xffz");
        assert_eq!(unescape("é").unwrap(), "é".as_bytes());
    }

    #[test]
    fn bad_escapes_are_explained() {
        assert!(unescape("\\q").unwrap_err().contains("unknown escape"));
        assert!(unescape("x\\").unwrap_err().contains("lone backslash"));
        assert!(unescape("\\x4").unwrap_err().contains("two hex digits"));
        assert!(from_hex("abc").unwrap_err().contains("even"));
        assert!(from_hex("zz").unwrap_err().contains("not hex"));
    }
}
