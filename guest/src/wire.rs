//! Protobuf wire format read straight from a byte slice, for the scan
//! before decoding ([`crate::prefilter`]) and the decoding of kept records
//! ([`crate::decode`]).

pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// Reads protobuf wire format from a byte slice; every method returns
/// `None` on anything malformed (or a group, which the scan leaves to
/// decoding).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// The next field's tag and wire type; `Some(None)` at the end.
    #[inline]
    pub(crate) fn key(&mut self) -> Option<Option<(u32, u8)>> {
        if self.bytes.is_empty() {
            return Some(None);
        }
        let key = u32::try_from(self.varint()?).ok()?;
        let (tag, wire) = (key >> 3, (key & 7) as u8);
        (tag != 0).then_some(Some((tag, wire)))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        // Nearly every tag and length fits in one byte.
        match self.bytes {
            [b, rest @ ..] if *b < 0x80 => {
                self.bytes = rest;
                Some(u64::from(*b))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.bytes.iter().enumerate().take(10) {
            // The tenth byte may only carry the 64th bit.
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.bytes = &self.bytes[i + 1..];
                return Some(value);
            }
        }
        None
    }

    #[inline]
    pub(crate) fn varint_field(&mut self, wire: u8) -> Option<u64> {
        if wire != WIRE_VARINT {
            return None;
        }
        self.varint()
    }

    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(len)?;
        self.bytes = rest;
        Some(taken)
    }

    #[inline]
    pub(crate) fn len_delimited(&mut self, wire: u8) -> Option<&'a [u8]> {
        if wire != WIRE_LEN {
            return None;
        }
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    #[inline(always)]
    pub(crate) fn string(&mut self, wire: u8) -> Option<&'a str> {
        utf8(self.len_delimited(wire)?)
    }

    /// A fixed32 field's value.
    #[inline]
    pub(crate) fn fixed32(&mut self, wire: u8) -> Option<u32> {
        if wire != WIRE_FIXED32 {
            return None;
        }
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A fixed64 (or double) field's value.
    #[inline]
    pub(crate) fn fixed64(&mut self, wire: u8) -> Option<u64> {
        if wire != WIRE_FIXED64 {
            return None;
        }
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Moves past an unknown field.
    pub(crate) fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited(wire).map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }
}

/// The bytes as text when they are UTF-8. Nearly all text in telemetry is
/// ASCII, which is checked first eight bytes at a time (the standard
/// library's check goes four at a time on wasm32, and was an eighth of the
/// time of a batch the filter mostly drops).
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if is_ascii(bytes) {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Whether every byte is below 0x80: the words of eight bytes (the last
/// one overlapping those before), two of four, or single bytes.
#[inline]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if n >= 8 {
        let mut any = word(n - 8);
        let mut at = 0;
        while at + 8 <= n {
            any |= word(at);
            at += 8;
        }
        any & HIGH == 0
    } else if n >= 4 {
        (half(0) | half(n - 4)) & HIGH as u32 == 0
    } else {
        bytes.iter().all(|b| *b < 0x80)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_taken_exactly_when_it_is_utf8() {
        let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789".as_bytes();
        for len in 0..=alphabet.len() {
            assert_eq!(utf8(&alphabet[..len]), Some(&"abcdefghijklmnopqrstuvwxyz0123456789"[..len]));
            // One byte of a character or an invalid byte at every place.
            for at in 0..len {
                for byte in [0x80, 0xc3, 0xff] {
                    let mut bytes = alphabet[..len].to_vec();
                    bytes[at] = byte;
                    assert_eq!(utf8(&bytes), None, "{bytes:?}");
                }
                let mut text = String::from_utf8(alphabet[..len].to_vec()).unwrap();
                text.insert(at, 'é');
                assert_eq!(utf8(text.as_bytes()), Some(text.as_str()));
            }
        }
    }
}
